//! The Pinning Service API on real processes (issue 15, Benchmark):
//! `cargo bench --bench pinsvc`.
//!
//! Starts three scripted Kubo nodes in this process (`pinfleet::testkit`'s
//! `MockKubo`: a pin succeeds at once) and the 3-peer testbed on them
//! (`pinfleet testbed up --ipfs kubo=URL,URL,URL`, the binary cargo builds
//! for this bench, on 127.0.0.1), whose `testbed.json` names
//! each peer's Pinning Service listener (`peers[].pinsvc`) and a usable
//! token (`pinsvc_token`), and measures:
//!
//! 1. `POST /pins`: C concurrent clients (default 16), spread over the three
//!    peers, create N pin requests (default 100,000; distinct CIDv1 raw
//!    CIDs, each with a name and one `meta` pair); prints requests/s and
//!    latency percentiles;
//! 2. `GET /pins?limit=1000` with N requests recorded: the first page, a
//!    walk of pages with `before` (the newest first, as clients page), and
//!    filtered listings (`name` partial match, `status` list, `cid`,
//!    `meta`); prints each one's latency (median of R runs, default 5) and
//!    checks `count` against what was created;
//! 3. once every request is `pinned` (the time it took is printed), the
//!    default listing (no `status`: `pinned` only, what `ipfs pin remote
//!    ls` asks), whose `count` needs every matching request's status, and
//!    a walk of its pages with `before`.
//!
//! Speed is never asserted; a wrong answer (a refused request, a wrong
//! count, a page out of order) makes the bench exit 1. Every wait has a
//! deadline. The testbed is stopped on every exit path, and everything
//! lives in one temporary directory removed at the end.
//!
//! Environment: `PINFLEET_SVCBENCH_REQUESTS` (N), `PINFLEET_SVCBENCH_CLIENTS`
//! (C), `PINFLEET_SVCBENCH_RUNS` (R), `PINFLEET_SVCBENCH_PAGES` (pages walked
//! with `before`, default 20), `PINFLEET_SVCBENCH_TIMEOUT_SECS` (each wait,
//! default 900), `PINFLEET_SVCBENCH_DIR` (where the temporary directory
//! goes), `PINFLEET_SVCBENCH_EXE` (another `pinfleet` build to measure
//! instead).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Res, Testbed, env_u64, fig, pct, secs};
use pinfleet::testkit::{MockKubo, seq_cid};
use serde_json::{Value, json};

/// The daemon under test.
fn exe() -> String {
    std::env::var("PINFLEET_SVCBENCH_EXE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pinfleet").into())
}

/// Part 1: `clients` clients create `n` requests.
async fn create(
    client: &reqwest::Client,
    svcs: &[String],
    token: &str,
    n: u64,
    clients: u64,
) -> Res<()> {
    let (client, svcs, token) = (client.clone(), svcs.to_vec(), token.to_owned());
    let (took, latencies) = common::drive(n, clients, move |c, i| {
        let (client, token) = (client.clone(), token.clone());
        let svc = svcs[(c as usize) % svcs.len()].clone();
        async move {
            let body = json!({
                "cid": seq_cid(i).to_string(),
                "name": format!("req-{i:07}"),
                "meta": {"batch": format!("b{}", i % 10)},
            });
            let resp = client
                .post(format!("{svc}/pins"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status.as_u16() != 202 {
                return Err(format!("request {i}: {status} {text}"));
            }
            Ok(())
        }
    })
    .await?;
    fig(
        format!("{n} POST /pins, {clients} clients over 3 peers"),
        format!(
            "{} ({:.0} requests/s)",
            secs(took),
            n as f64 / took.as_secs_f64()
        ),
    );
    common::latency_fig(&latencies);
    Ok(())
}

/// One `GET /pins?QUERY`: its latency, `count` and results.
async fn list(
    client: &reqwest::Client,
    svc: &str,
    token: &str,
    query: &str,
) -> Res<(Duration, u64, Vec<Value>)> {
    let t = Instant::now();
    let resp = client
        .get(format!("{svc}/pins?{query}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    let took = t.elapsed();
    if status.as_u16() != 200 {
        return Err(format!("GET /pins?{query}: {status} {body}"));
    }
    let count = body["count"].as_u64().ok_or("no count")?;
    let results = body["results"].as_array().cloned().unwrap_or_default();
    Ok((took, count, results))
}

/// `GET /pins?QUERY` `runs` times, each checked for `count == want`;
/// prints the median latency as `label`.
async fn timed(
    client: &reqwest::Client,
    svc: &str,
    token: &str,
    query: &str,
    want: u64,
    runs: u64,
    label: &str,
) -> Res<()> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let (took, count, _) = list(client, svc, token, query).await?;
        if count != want {
            return Err(format!("{label}: count {count}, want {want}"));
        }
        times.push(took);
    }
    times.sort();
    fig(
        label,
        format!("{} (median of {})", pct(&times, 0.5), times.len()),
    );
    Ok(())
}

/// Waits until `GET /pins?QUERY` counts `n`; returns how long it took.
async fn until_count(
    client: &reqwest::Client,
    svc: &str,
    token: &str,
    query: &str,
    n: u64,
    timeout: Duration,
) -> Res<Duration> {
    let t = Instant::now();
    loop {
        let (_, count, _) = list(client, svc, token, query).await?;
        if count == n {
            return Ok(t.elapsed());
        }
        if t.elapsed() > timeout {
            return Err(format!("GET /pins?{query} counts {count} of {n}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Part 2: listings of `n` requests, each the median of `runs`, once
/// `svc`'s peer has applied all of them.
async fn listings(
    client: &reqwest::Client,
    svc: &str,
    token: &str,
    n: u64,
    runs: u64,
    pages: u64,
    timeout: Duration,
) -> Res<()> {
    let every = "status=queued,pinning,pinned,failed";
    until_count(client, svc, token, &format!("limit=1&{every}"), n, timeout).await?;
    let cases: Vec<(String, String, u64)> = vec![
        ("first page".into(), format!("limit=1000&{every}"), n),
        (
            "name partial match (req-000…: up to 10,000 of them)".into(),
            format!("limit=1000&{every}&name=req-000&match=partial"),
            n.min(10_000),
        ),
        (
            "meta filter (1/10 of them)".into(),
            format!(
                "limit=1000&{every}&meta={}",
                urlencode(&json!({"batch": "b3"}).to_string())
            ),
            (0..n).filter(|i| i % 10 == 3).count() as u64,
        ),
        (
            "cid filter (10 CIDs)".into(),
            format!(
                "limit=1000&{every}&cid={}",
                (0..10.min(n))
                    .map(|i| seq_cid(i * (n / 10).max(1)).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            10.min(n),
        ),
    ];
    for (what, query, want) in cases {
        timed(
            client,
            svc,
            token,
            &query,
            want,
            runs,
            &format!("GET /pins?limit=1000, {what}"),
        )
        .await?;
    }
    walk(client, svc, token, every, pages, "").await
}

/// `pages` pages of `GET /pins?limit=1000&FILTER` walked with `before`, as
/// a client pages newest first; each result strictly older than the last.
async fn walk(
    client: &reqwest::Client,
    svc: &str,
    token: &str,
    filter: &str,
    pages: u64,
    label: &str,
) -> Res<()> {
    let t = Instant::now();
    let mut before: Option<String> = None;
    let mut seen = 0u64;
    let mut last_created: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    for _ in 0..pages {
        let query = match &before {
            Some(b) => format!("limit=1000&{filter}&before={}", urlencode(b)),
            None => format!("limit=1000&{filter}"),
        };
        let (_, _, results) = list(client, svc, token, &query).await?;
        let Some(last) = results.last() else { break };
        for r in &results {
            let text = r["created"].as_str().unwrap_or_default();
            let created = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| format!("created {text:?}: {e}"))?;
            if last_created.is_some_and(|l| created >= l) {
                return Err(format!("page out of order at {text}"));
            }
            last_created = Some(created);
        }
        seen += results.len() as u64;
        before = last["created"].as_str().map(str::to_owned);
    }
    let took = t.elapsed();
    let n = seen.div_ceil(1000);
    fig(
        format!("{n} pages walked with before (limit=1000){label}"),
        format!(
            "{} ({:.1} ms per page, {seen} requests)",
            secs(took),
            took.as_secs_f64() * 1e3 / n.max(1) as f64
        ),
    );
    Ok(())
}

/// Part 3: waits until every request is pinned, then times the default
/// listing (`pinned` only) and a name filter on it.
async fn pinned(
    client: &reqwest::Client,
    svc: &str,
    token: &str,
    n: u64,
    runs: u64,
    pages: u64,
    timeout: Duration,
) -> Res<()> {
    let took = until_count(client, svc, token, "limit=1", n, timeout).await?;
    fig(
        "every request pinned (after the listings above)",
        secs(took),
    );
    for (what, query, want) in [
        ("limit=1000", "limit=1000".to_string(), n),
        (
            "limit=1000, name partial match",
            "limit=1000&name=req-000&match=partial".to_string(),
            n.min(10_000),
        ),
    ] {
        timed(
            client,
            svc,
            token,
            &query,
            want,
            runs,
            &format!("GET /pins?{what} (pinned only)"),
        )
        .await?;
    }
    walk(client, svc, token, "status=pinned", pages, ", pinned only").await?;
    // Statuses are reused for 30 s; past that the default listing asks
    // the cluster for every request's status again.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let (took, count, _) = list(client, svc, token, "limit=1000").await?;
    if count != n {
        return Err(format!("the default listing counts {count} of {n}"));
    }
    fig(
        "GET /pins?limit=1000 (pinned only), no status known lately (31 s later)",
        format!("{:.1} ms", took.as_secs_f64() * 1e3),
    );
    Ok(())
}

/// Percent-encodes everything but unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn run(dir: &Path) -> Res<()> {
    let n = env_u64("PINFLEET_SVCBENCH_REQUESTS", 100_000);
    let clients = env_u64("PINFLEET_SVCBENCH_CLIENTS", 16).max(1);
    let runs = env_u64("PINFLEET_SVCBENCH_RUNS", 5);
    let pages = env_u64("PINFLEET_SVCBENCH_PAGES", 20);
    let timeout = Duration::from_secs(env_u64("PINFLEET_SVCBENCH_TIMEOUT_SECS", 900));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut kubos = Vec::new();
    for _ in 0..3 {
        let (k, _) = rt.block_on(MockKubo::start()).map_err(|e| e.to_string())?;
        kubos.push(k);
    }
    let urls: Vec<String> = kubos.iter().map(|k| k.url().to_string()).collect();
    let tb = Testbed::up(
        &exe(),
        dir,
        &["--ipfs".into(), format!("kubo={}", urls.join(","))],
        "3 peers on mock Kubo",
        timeout,
    )?;
    let svcs = tb.peers("pinsvc");
    let token = tb.file["pinsvc_token"]
        .as_str()
        .ok_or("testbed.json has no pinsvc_token")?
        .to_owned();
    if svcs.len() != 3 {
        return Err(format!(
            "testbed.json names {} pinsvc listeners",
            svcs.len()
        ));
    }
    rt.block_on(async {
        let client = pinfleet::tls::client(None)
            .map_err(|e| e.to_string())?
            .pool_max_idle_per_host(clients as usize)
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        println!("\n== POST /pins");
        create(&client, &svcs, &token, n, clients).await?;
        println!("\n== GET /pins with {n} requests recorded (on the peer the first client used)");
        listings(&client, &svcs[0], &token, n, runs, pages, timeout).await?;
        println!("\n== GET /pins without status (pinned only), every request pinned");
        pinned(&client, &svcs[0], &token, n, runs, pages, timeout).await
    })?;
    drop(tb);
    drop(kubos);
    Ok(())
}

fn main() {
    common::main_in(
        "Pinning Service API",
        "PINFLEET_SVCBENCH_DIR",
        "pinfleet-pinsvc-",
        run,
    );
}
