//! The web dashboard at scale (issue 21, item 3): `cargo bench --bench
//! dashboard`.
//!
//! Starts the 3-peer testbed without IPFS (`pinfleet testbed up --ipfs
//! none`, the binary cargo builds for this bench, on 127.0.0.1), applies P
//! small PinSets (default 100, ten pins each) and one PinSet `bench/big` of
//! N pins (default 1,000,000, from a `pinsFrom` list) with `pinfleet apply
//! --host`, then times the dashboard's pages as a browser asks for them
//! (`GET`, the whole HTML answer; each R times, default 5: median and
//! slowest):
//!
//! 1. the overview `/ui/` (every PinSet listed);
//! 2. the big PinSet's page: the first time (its count not known yet: the
//!    page says it is counting), how long until its count is shown, then
//!    with the count known;
//! 3. the pin search by CID and by name (first page);
//! 4. peer 0's page (its charts).
//!
//! Every answer must be 200 HTML naming what it should (the PinSets, the
//! CID, the peer), else the bench exits 1. Speed is never asserted. Every
//! wait has a deadline; the testbed is stopped on every exit path, and
//! everything lives in one temporary directory removed at the end.
//!
//! Environment: `PINFLEET_DASHBENCH_PINS` (N), `PINFLEET_DASHBENCH_PINSETS`
//! (P), `PINFLEET_DASHBENCH_RUNS` (R), `PINFLEET_DASHBENCH_TIMEOUT_SECS`
//! (each wait, default 900), `PINFLEET_DASHBENCH_DIR` (where the temporary
//! directory goes).

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Res, Testbed, env_u64, fig, secs};
use sha2::{Digest, Sha256};

/// The daemon and CLI under test, built by cargo for this bench.
const EXE: &str = env!("CARGO_BIN_EXE_pinfleet");
/// Pins of each small PinSet.
const SMALL_PINS: u64 = 10;
/// What the PinSet page says while its count is not known.
const COUNTING: &str = "Counting ";

/// CID `i`: CIDv1, raw codec, sha2-256 of `i` (little-endian u64).
fn cid(i: u64) -> String {
    let digest = Sha256::digest(i.to_le_bytes());
    match multihash::Multihash::<64>::wrap(0x12, &digest) {
        Ok(mh) => cid::Cid::new_v1(0x55, mh).to_string(),
        // A 32-byte digest always fits a 64-byte multihash.
        Err(e) => unreachable!("sha2-256 multihash: {e}"),
    }
}

/// Writes the manifests: `small-K.yaml` (PinSet `bench/small-K`, ten
/// inline pins each) and `big.yaml` (PinSet `bench/big`, whose `pinsFrom`
/// list `big.txt` has `n` lines `CID big-<i>`).
fn write_manifests(dir: &Path, n: u64, pinsets: u64) -> Res<()> {
    let t = Instant::now();
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.join("big.txt")).map_err(err)?);
    for i in 0..n {
        writeln!(w, "{} big-{i}", cid(i)).map_err(err)?;
    }
    w.flush().map_err(err)?;
    let big = "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: big\n  \
               namespace: bench\nspec:\n  pinsFrom:\n    - path: big.txt\n";
    std::fs::write(dir.join("big.yaml"), big).map_err(err)?;
    for k in 0..pinsets {
        let mut yaml = format!(
            "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: small-{k}\n  \
             namespace: bench\nspec:\n  pins:\n"
        );
        for j in 0..SMALL_PINS {
            let i = n + k * SMALL_PINS + j;
            yaml.push_str(&format!(
                "    - cid: {}\n      name: small-{k}-{j}\n",
                cid(i)
            ));
        }
        std::fs::write(dir.join(format!("small-{k}.yaml")), yaml).map_err(err)?;
    }
    println!(
        "  (setup) {pinsets} PinSets of {SMALL_PINS} pins and one of {n} pins written in {}",
        secs(t.elapsed())
    );
    Ok(())
}

/// `pinfleet apply DIR --host API`, which must succeed.
fn apply(dir: &Path, api: &str, timeout: Duration) -> Res<()> {
    let out = dir.parent().unwrap_or(dir).join("apply.out");
    let mut cmd = std::process::Command::new(EXE);
    cmd.arg("apply").arg(dir).args(["--host", api]);
    let (ok, stdout, stderr) = common::bounded(&mut cmd, timeout, &out)?;
    if !ok {
        return Err(format!("pinfleet apply failed: {stdout}{stderr}"));
    }
    Ok(())
}

/// `GET url`: the time it took and the HTML, which must answer 200.
async fn page(client: &reqwest::Client, url: &str) -> Res<(Duration, String)> {
    let t = Instant::now();
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
    let took = t.elapsed();
    if !status.is_success() {
        return Err(format!("GET {url}: {status}: {body}"));
    }
    Ok((took, body))
}

/// Asks for `url` `runs` times; every answer must contain each of `want`.
/// Prints the median and the slowest as figure `what`.
async fn timed(
    client: &reqwest::Client,
    what: &str,
    url: &str,
    want: &[&str],
    runs: u64,
) -> Res<()> {
    let mut took = Vec::new();
    for _ in 0..runs.max(1) {
        let (t, body) = page(client, url).await?;
        for w in want {
            if !body.contains(w) {
                return Err(format!("GET {url} does not name {w}"));
            }
        }
        took.push(t);
    }
    took.sort();
    fig(
        what,
        format!(
            "median {} / slowest {} ({} runs)",
            common::pct(&took, 0.5),
            common::pct(&took, 1.0),
            took.len()
        ),
    );
    Ok(())
}

/// Waits until every peer's `GET /pinsets/bench/big` records `n` pins.
async fn wait_applied(
    client: &reqwest::Client,
    apis: &[String],
    n: u64,
    timeout: Duration,
) -> Res<()> {
    let t = Instant::now();
    for api in apis {
        loop {
            let url = format!("{api}/pinsets/bench/big");
            let pins = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["pins"].as_u64()),
                _ => None,
            };
            if pins == Some(n) {
                break;
            }
            if t.elapsed() > timeout {
                return Err(format!("{api} did not apply bench/big in time ({pins:?})"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn run(dir: &Path) -> Res<()> {
    let n = env_u64("PINFLEET_DASHBENCH_PINS", 1_000_000);
    let pinsets = env_u64("PINFLEET_DASHBENCH_PINSETS", 100);
    let runs = env_u64("PINFLEET_DASHBENCH_RUNS", 5);
    let timeout = Duration::from_secs(env_u64("PINFLEET_DASHBENCH_TIMEOUT_SECS", 900));
    let manifests = dir.join("manifests");
    write_manifests(&manifests, n, pinsets)?;
    let tb = Testbed::up(
        EXE,
        dir,
        &["--ipfs".into(), "none".into()],
        "3 peers, no IPFS",
        timeout,
    )?;
    let apis = tb.peers("api");
    let ids = tb.peers("id");
    let t = Instant::now();
    apply(&manifests, &apis[0], timeout)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client = pinfleet::tls::client(None)
            .map_err(|e| e.to_string())?
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        wait_applied(&client, &apis, n, timeout).await?;
        fig(
            format!(
                "(setup) {} PinSets, {} pins applied on 3 peers",
                pinsets + 1,
                n + pinsets * SMALL_PINS
            ),
            secs(t.elapsed()),
        );
        let ui = format!("{}/ui", apis[0]);

        println!("\n== the big PinSet's page, its count not known yet");
        let big = format!("{ui}/pinsets/bench/big");
        let (first, body) = page(&client, &big).await?;
        let counting = body.contains(COUNTING);
        fig(
            "first view",
            format!(
                "{:.1} ms ({})",
                first.as_secs_f64() * 1e3,
                if counting {
                    "says it is counting"
                } else {
                    "count shown"
                }
            ),
        );
        let t = Instant::now();
        loop {
            let (_, body) = page(&client, &big).await?;
            if !body.contains(COUNTING) {
                break;
            }
            if t.elapsed() > timeout {
                return Err("the big PinSet's count was never shown".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        fig("count shown after", secs(t.elapsed() + first));
        timed(&client, "with its count known", &big, &["bench/big"], runs).await?;

        println!("\n== the overview ({} PinSets)", pinsets + 1);
        let last = format!("small-{}", pinsets.saturating_sub(1));
        timed(
            &client,
            "GET /ui/",
            &format!("{ui}/"),
            &["bench/big", &last],
            runs,
        )
        .await?;

        println!("\n== pin search, first page");
        let c = cid(n / 2);
        timed(&client, "by CID", &format!("{ui}/pins?q={c}"), &[&c], runs).await?;
        // A name search walks the state (there is no name index) for a
        // bounded time per page: a name deep in a million pins may be on a
        // later page ("Search on").
        let name = format!("big-{}", n / 2);
        let url = format!("{ui}/pins?q={name}");
        timed(&client, "by name", &url, &[], runs).await?;
        let (_, body) = page(&client, &url).await?;
        let found = body.contains(&format!("data-cid=\"{c}\""));
        println!(
            "  ({name} is {} the first page)",
            if found { "on" } else { "not on" }
        );

        println!("\n== peer 0's page");
        let id = ids.first().ok_or("testbed.json lists no peer id")?;
        timed(
            &client,
            "GET /ui/peers/ID",
            &format!("{ui}/peers/{id}"),
            &[id.as_str()],
            runs,
        )
        .await
    })?;
    drop(tb);
    Ok(())
}

fn main() {
    common::main_in("dashboard", "PINFLEET_DASHBENCH_DIR", "pinfleet-dash-", run);
}
