//! Random requests against every route (issue 23 item 3, the part that
//! needs no OpenAPI document): methods, path values, query strings, bodies
//! and headers drawn from a fixed seed over the route table, against an
//! in-process peer with an embedded IPFS node. No answer may be a 5xx other
//! than 503, every error is a small `{"code", "message"}` with the status's
//! code, nothing hangs, and the peer serves normally afterwards.
//!
//! `PINFLEET_FUZZ_SEED` and `PINFLEET_FUZZ_CASES` replay or widen a run;
//! CI uses the defaults.

use std::time::{Duration, Instant};

use pinfleet::api::routes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;

use crate::inproc::Api;
use crate::support::{cid_v0, cid_v1, pinset_yaml};

const DEFAULT_SEED: u64 = 23;
const DEFAULT_CASES: usize = 600;
/// Longest any one answer may take: a hang is a failure.
const PER_REQUEST: Duration = Duration::from_secs(15);
/// Largest error body accepted (errors are capped at 4 KiB of message).
const MAX_ERROR_BODY: usize = 64 * 1024;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A value for a path parameter or a query value: valid, nearly valid,
/// hostile.
fn value(rng: &mut StdRng) -> String {
    match rng.random_range(0..14) {
        0 => cid_v1(&format!("fuzz-{}", rng.random::<u32>())),
        1 => cid_v0(&format!("fuzz-{}", rng.random::<u32>())),
        2 => String::new(),
        3 => "..".into(),
        4 => "%2e%2e%2f%00".into(),
        5 => "x".repeat(rng.random_range(1..20_000)),
        6 => "ü\u{202e}\u{0}\u{feff}".into(),
        7 => rng.random::<i64>().to_string(),
        8 => "-1".into(),
        9 => ["true", "false", "1", "0", "yes"][rng.random_range(0..5)].into(),
        10 => ["1s", "0s", "-5m", "99999999h", "1.5x"][rng.random_range(0..5)].into(),
        11 => ["pinned", "pin_error,queued", "bogus", "all"][rng.random_range(0..4)].into(),
        12 => libp2p::PeerId::random().to_string(),
        _ => {
            let n = rng.random_range(1..40);
            (0..n)
                .map(|_| char::from(rng.random_range(0x21u8..0x7f)))
                .collect()
        }
    }
}

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

const QUERY_KEYS: &[&str] = &[
    "force",
    "dryRun",
    "maxPruneFraction",
    "replication-min",
    "replication-max",
    "name",
    "mode",
    "filter",
    "local",
    "cids",
    "role",
    "ttl",
    "user",
    "source",
    "expire-at",
    "meta-x",
    "origins",
    "user-allocations",
    "shard-size",
    "cid-version",
    "chunker",
    "stream-channels",
    "no-pin",
];

fn query(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..4);
    let pairs: Vec<String> = (0..n)
        .map(|_| {
            let key = QUERY_KEYS[rng.random_range(0..QUERY_KEYS.len())];
            format!("{}={}", key, enc(&value(rng)))
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

fn body(rng: &mut StdRng) -> (Option<&'static str>, Vec<u8>) {
    match rng.random_range(0..8) {
        0 => (None, Vec::new()),
        1 => {
            let n = rng.random_range(1..4096);
            (None, (0..n).map(|_| rng.random::<u8>()).collect())
        }
        2 => (
            Some("application/yaml"),
            pinset_yaml("fuzz", "p", &[cid_v1("fuzz-body")]).into_bytes(),
        ),
        3 => {
            let mut doc = pinset_yaml("fuzz", "q", &[cid_v1("fuzz-body-2")]).into_bytes();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..doc.len());
                doc[i] = rng.random();
            }
            (Some("application/yaml"), doc)
        }
        4 => (Some("application/json"), b"{\"add\":[1,2,{}],\"x\":".to_vec()),
        5 => (Some("application/json"), b"[{\"type\":null}]".to_vec()),
        6 => (
            Some("multipart/form-data; boundary=zz"),
            b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nhello\r\n--zz--\r\n"
                .to_vec(),
        ),
        _ => (Some("application/json"), vec![b'['; 10_000]),
    }
}

/// The request the case draws: a route of the table with values put in, or
/// now and then a path or method no route has.
fn request(rng: &mut StdRng, table: &[pinfleet::api::Route]) -> (Method, String) {
    let r = &table[rng.random_range(0..table.len())];
    let mut path = String::new();
    for segment in r.path.split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        if segment.starts_with('{') {
            path.push_str(&enc(&value(rng)));
        } else {
            path.push_str(segment);
        }
    }
    if rng.random_ratio(1, 10) {
        path.push_str(&format!("/{}", enc(&value(rng))));
    }
    let method = if rng.random_ratio(1, 8) {
        [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ][rng.random_range(0..5)]
        .clone()
    } else {
        r.method.clone()
    };
    (method, format!("{path}{}", query(rng)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_on_every_route_get_no_5xx_and_json_errors() {
    let seed = env_or("PINFLEET_FUZZ_SEED", DEFAULT_SEED);
    let cases = env_or("PINFLEET_FUZZ_CASES", DEFAULT_CASES);
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(tmp.path(), true, |mut s| {
        s.max_upload_bytes = 1 << 20;
        s.max_body_bytes = 1 << 20;
        // Random path pins walk blocks no node has: give up quickly.
        s.resolve_timeout = Duration::from_secs(1);
        s
    })
    .await;
    let url = api.url.clone();

    let http = crate::support::http_builder()
        .timeout(PER_REQUEST)
        .build()
        .unwrap();
    let table = routes();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..cases {
        let (method, path) = request(&mut rng, &table);
        let (ctype, bytes) = body(&mut rng);
        let mut req = http.request(method.clone(), format!("{url}{path}"));
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        if !bytes.is_empty() {
            req = req.body(bytes);
        }
        let what = format!("case {case} (seed {seed}): {method} {}", cut(&path));
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = resp.status().as_u16();
        *by_status.entry(status).or_default() += 1;
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: body: {e}"));
        // A path pin whose path does not resolve is IPFS Cluster's 500.
        let path_pin = ["/pins/ipfs/", "/pins/ipns/", "/pins/ipld/"]
            .iter()
            .any(|p| path.starts_with(p));
        let unresolved = path_pin
            && status == 500
            && serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("cannot resolve "))
            });
        assert!(
            status < 500 || status == 503 || unresolved,
            "{what}: {status} {}",
            cut(&text)
        );
        if status >= 400 {
            assert!(text.len() <= MAX_ERROR_BODY, "{what}: {} bytes", text.len());
            let error: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: {status} not JSON ({e}): {}", cut(&text)));
            assert_eq!(error["code"], status, "{what}: {}", cut(&text));
            assert!(error["message"].is_string(), "{what}: {}", cut(&text));
        }
    }
    eprintln!(
        "rest fuzz: {cases} requests, seed {seed}, {:.1}s, statuses {by_status:?}",
        started.elapsed().as_secs_f64()
    );
    let health = http.get(format!("{url}/health")).send().await.unwrap();
    assert!(health.status().is_success());
    let id = http.get(format!("{url}/id")).send().await.unwrap();
    assert!(id.status().is_success());
    api.stop().await;
}

fn cut(s: &str) -> String {
    s.chars().take(200).collect()
}
