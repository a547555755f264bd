//! Webhooks in `pinfleet daemon` beyond one listener (issue 13 item 6): on
//! `controller.webhook_listen` the hooks are served alone (and no longer on
//! the REST API), and a hook sent to a follower reaches the leader's
//! controller over the cluster RPC. Real daemons, a real git repository
//! fetched over `file://`.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use git2::{Repository, Signature};

use super::support::{
    cid_v1, init_peer, pinset_yaml, spawn_daemon_logged, stop_daemon, wait_running,
};
use super::webhook::sign;

const DEADLINE: Duration = Duration::from_secs(60);
const HOOK_SECRET: &str = "hook-s3cret";
const CLUSTER_SECRET: &str = "d00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00dd00d";

/// A repository whose `main` is the git source (fetched over `file://`).
struct Repo {
    repo: Repository,
}

impl Repo {
    fn new(dir: &Path) -> Self {
        let repo = Repository::init(dir).unwrap();
        repo.set_head("refs/heads/main").unwrap();
        Self { repo }
    }

    fn url(&self) -> String {
        format!("file://{}", self.repo.workdir().unwrap().display())
    }

    /// Commits `mirror.yaml` listing `cids` on main.
    fn commit(&self, cids: &[String]) {
        let work = self.repo.workdir().unwrap();
        std::fs::write(
            work.join("mirror.yaml"),
            pinset_yaml("hooks", "mirror", cids),
        )
        .unwrap();
        let mut index = self.repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("it", "it@example.org").unwrap();
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, "change", &tree, &parents)
            .unwrap();
    }
}

/// Kills every daemon still running when a test fails.
struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn seeds(test: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| cid_v1(&format!("hooks-{test}-{i}")))
        .collect()
}

/// Waits until `hooks/mirror` is listed at `api` with `pins` pins.
async fn wait_pins(api: &str, pins: u64) {
    let http = crate::support::http();
    let start = Instant::now();
    loop {
        let listed = match http.get(format!("{api}/pinsets")).send().await {
            Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
            _ => None,
        };
        let found = listed.as_ref().and_then(|v| v.as_array()).is_some_and(|a| {
            a.iter()
                .any(|p| p["namespace"] == "hooks" && p["name"] == "mirror" && p["pins"] == pins)
        });
        if found {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{pins} pins not applied within {DEADLINE:?}: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A signed generic hook for receiver `main` at `base`.
async fn signed_hook(base: &str, secret: &str) -> reqwest::Response {
    let body = r#"{"ref":"refs/heads/main"}"#;
    crate::support::http()
        .post(format!("{base}/hooks/main"))
        .header("x-signature-256", sign(secret.as_bytes(), body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap()
}

fn env_for<'a>(source: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("PINFLEET_CLUSTER_SECRET", CLUSTER_SECRET),
        ("PINFLEET_IPFS_BACKEND", "none"),
        ("PINFLEET_CONTROLLER_SOURCES", source),
        // Only hooks (and the start) fetch within a test.
        ("PINFLEET_CONTROLLER_INTERVAL", "1h"),
        ("PINFLEET_CONTROLLER_WEBHOOKS", "generic:main"),
        ("PINFLEET_WEBHOOK_SECRET", HOOK_SECRET),
        ("RUST_LOG", "pinfleet=info"),
    ];
    env.extend_from_slice(extra);
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_listen_serves_only_the_hooks_and_the_rest_api_none() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(&tmp.path().join("repo"));
    let cids = seeds("listen", 3);
    repo.commit(&cids[..1]);
    let source = format!("git:{}", repo.url());
    let d = tmp.path().join("peer");
    init_peer(&d);
    let env = env_for(
        &source,
        &[("PINFLEET_CONTROLLER_WEBHOOK_LISTEN", "127.0.0.1:0")],
    );
    let log = tmp.path().join("peer.log");
    let mut daemons = Daemons(vec![spawn_daemon_logged(&d, &[], &env, &log)]);
    let info = wait_running(&d, &mut daemons.0[0]);
    let hooks = info
        .webhook
        .clone()
        .expect("run.json names the webhook listener");
    assert_ne!(hooks, info.api);
    wait_pins(&info.api, 1).await;

    repo.commit(&cids);
    let answer = signed_hook(&hooks, HOOK_SECRET).await;
    assert_eq!(answer.status().as_u16(), 202);
    wait_pins(&info.api, 3).await;

    // The hook is not on the REST API, and the API is not on the hook port.
    let on_rest = signed_hook(&info.api, HOOK_SECRET).await;
    assert_eq!(on_rest.status().as_u16(), 404);
    let http = crate::support::http();
    for path in ["/id", "/pinsets", "/health"] {
        let r = http.get(format!("{hooks}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path} on the webhook port");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], 404);
    }
    let bad = http
        .post(format!("{hooks}/hooks/main"))
        .header("x-signature-256", "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);

    stop_daemon(&mut daemons.0[0]);
}

/// Waits until every peer's `/metrics` counts `n` members and exactly one
/// says it leads; returns the leader's index.
async fn wait_leader(apis: &[String], n: usize) -> usize {
    let http = crate::support::http();
    let start = Instant::now();
    loop {
        let mut leaders = Vec::new();
        let mut formed = true;
        for (i, api) in apis.iter().enumerate() {
            let text = match http.get(format!("{api}/metrics")).send().await {
                Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                _ => String::new(),
            };
            formed &= text.lines().any(|l| l == format!("pinfleet_peers {n}"));
            if text.lines().any(|l| l == "pinfleet_leader 1") {
                leaders.push(i);
            }
        }
        if formed && leaders.len() == 1 {
            return leaders[0];
        }
        assert!(start.elapsed() < DEADLINE, "cluster of {n} not formed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_sent_to_a_follower_triggers_the_leaders_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(&tmp.path().join("repo"));
    let cids = seeds("follower", 4);
    repo.commit(&cids[..1]);
    let source = format!("git:{}", repo.url());
    let env = env_for(&source, &[]);
    let mut daemons = Daemons(Vec::new());
    let mut apis = Vec::new();
    let mut logs = Vec::new();
    let mut bootstrap = None::<String>;
    for i in 0..3 {
        let d = tmp.path().join(format!("peer-{i}"));
        init_peer(&d);
        let log = tmp.path().join(format!("peer-{i}.log"));
        let args: Vec<&str> = match &bootstrap {
            Some(b) => vec!["--bootstrap", b],
            None => Vec::new(),
        };
        let mut child = spawn_daemon_logged(&d, &args, &env, &log);
        let info = wait_running(&d, &mut child);
        daemons.0.push(child);
        if bootstrap.is_none() {
            let p2p = info
                .p2p
                .iter()
                .find(|a| a.starts_with("/ip4/127.0.0.1/"))
                .expect("a loopback p2p address")
                .clone();
            bootstrap = Some(p2p);
        }
        apis.push(info.api);
        logs.push(log);
    }
    let leader = wait_leader(&apis, 3).await;
    let follower = (leader + 1) % 3;
    wait_pins(&apis[leader], 1).await;

    // A bad signature is refused by the follower itself: nothing forwarded.
    repo.commit(&cids[..2]);
    let bad = signed_hook(&apis[follower], "not-the-secret").await;
    assert_eq!(bad.status().as_u16(), 401);

    let good = signed_hook(&apis[follower], HOOK_SECRET).await;
    let status = good.status().as_u16();
    let text = good.text().await.unwrap();
    assert_eq!(status, 202, "{text}");
    wait_pins(&apis[leader], 2).await;

    // Exactly one hook reached the leader: the good one.
    let leader_log = std::fs::read_to_string(&logs[leader]).unwrap();
    assert_eq!(
        leader_log
            .matches("webhook forwarded by a follower: accepted")
            .count(),
        1,
        "{leader_log}"
    );
    assert!(
        !leader_log.contains(HOOK_SECRET),
        "the secret is never logged"
    );

    for c in &mut daemons.0 {
        stop_daemon(c);
    }
}
