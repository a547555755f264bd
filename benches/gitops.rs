//! GitOps end to end: a bare git repository (served over `file://`) holds
//! one PinSet whose `pinsFrom` list has N CIDs; three in-process peers, the
//! leader's REST API with a webhook receiver, and a git controller
//! (`run_git`, poll interval one hour) on that repository.
//!
//! Measured: the initial apply; then three times a commit that replaces 1%
//! of the CIDs, a signed webhook, and the time until that revision is
//! committed in consensus, at two points: when a quorum of voters holds the
//! revision's `Commit` log entry (Raft's commit: the revision is decided and
//! every peer will apply it), and when the leader has applied it (its state
//! holds the PinSet record with the new revision, written by that entry:
//! what `GET /pinsets` shows); then the CPU time (user + sys of the whole
//! process, `getrusage`) of a no-op poll; then the same steps one by one for
//! a breakdown, and the consensus part alone.
//! Prints figures; asserts only correctness (the final state holds exactly
//! the new CID set).
//!
//! `cargo bench --bench gitops` (`PINFLEET_BENCH_PINS=N` to resize).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use git2::{Oid, Repository, Signature};
use hmac::{Hmac, Mac};
use pinfleet::api::ApiState;
use pinfleet::client::Client;
use pinfleet::consensus::ClusterNode;
use pinfleet::controller::{Controller, ControllerOptions, ReconcileOutcome, run_git};
use pinfleet::manifest::{CidKey, Limits, Owner, PinSetId};
use pinfleet::pinsets::{self, PinSetPatch};
use pinfleet::plan::PruneGuard;
use pinfleet::source::git::{Credentials, GitSource};
use pinfleet::source::webhook::{self, GENERIC_SIGNATURE, Receiver, ReceiverKind};
use pinfleet::testkit::seq_cid;
use pinfleet::wire::PatchDocument;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SECRET: &[u8] = b"bench-secret";
const MANIFEST: &str = "apiVersion: pinfleet.io/v1alpha1
kind: PinSet
metadata:
  name: mirror
  namespace: bench
spec:
  pinsFrom:
    - path: lists/core.txt
";

/// CPU time (user + system) of the whole process so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// The list file: one `CID name` line per index.
fn list(ids: &[u64]) -> Vec<u8> {
    let mut s = String::with_capacity(ids.len() * 70);
    for i in ids {
        s.push_str(&seq_cid(*i).to_string());
        s.push_str(" p");
        s.push_str(&i.to_string());
        s.push('\n');
    }
    s.into_bytes()
}

/// The CIDs of revision `rev` (0 = initial): line `j` holds CID `j`, except
/// that lines with `j % 100` in `1..=rev` hold CID `n * (j % 100) + j`, so
/// each revision replaces 1% of the previous one's CIDs in place (the rest
/// of the file is identical).
fn ids(n: u64, rev: u64) -> Vec<u64> {
    (0..n)
        .map(|j| {
            let k = j % 100;
            if (1..=rev).contains(&k) { n * k + j } else { j }
        })
        .collect()
}

/// Commits `mirror.yaml` and `lists/core.txt` (holding `ids`) on main of
/// the bare repository, on top of its current head.
fn commit(repo: &Repository, ids: &[u64]) -> String {
    let manifest = repo.blob(MANIFEST.as_bytes()).expect("blob");
    let list = repo.blob(&list(ids)).expect("blob");
    let mut lists = repo.treebuilder(None).expect("treebuilder");
    lists.insert("core.txt", list, 0o100644).expect("insert");
    let lists = lists.write().expect("tree");
    let mut root = repo.treebuilder(None).expect("treebuilder");
    root.insert("mirror.yaml", manifest, 0o100644)
        .expect("insert");
    root.insert("lists", lists, 0o040000).expect("insert");
    let tree = repo.find_tree(root.write().expect("tree")).expect("tree");
    let sig = Signature::now("bench", "bench@example.org").expect("signature");
    let parent = repo
        .refname_to_id("refs/heads/main")
        .ok()
        .and_then(|o: Oid| repo.find_commit(o).ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("refs/heads/main"), &sig, &sig, "sync", &tree, &parents)
        .expect("commit")
        .to_string()
}

async fn send_hook(http: &reqwest::Client, api: &str) {
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("hmac");
    mac.update(&body);
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let resp = http
        .post(format!("{api}/hooks/bench"))
        .header(GENERIC_SIGNATURE, sig)
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
}

/// Waits until the leader's state records `revision` for the PinSet.
async fn committed(leader: &ClusterNode, owner: &Owner, revision: &str) {
    let mut applied = leader.applied_watch();
    loop {
        let recorded = leader
            .store()
            .pinsets()
            .expect("pinsets")
            .into_iter()
            .any(|(o, r)| o == *owner && r.revision == revision);
        if recorded {
            return;
        }
        tokio::time::timeout(Duration::from_secs(300), applied.changed())
            .await
            .expect("the revision was not committed within 300 s")
            .expect("applied watch");
    }
}

/// When each log index was first held by a quorum of the leader's voters.
struct QuorumLog(Arc<Mutex<Vec<(Instant, u64)>>>);

impl QuorumLog {
    /// How long after `start` a quorum first held `index`.
    fn when(&self, index: u64, start: Instant) -> Duration {
        let log = self.0.lock().expect("quorum log");
        log.iter()
            .find(|(_, i)| *i >= index)
            .map_or(Duration::ZERO, |(t, _)| t.saturating_duration_since(start))
    }
}

/// Records, from now on, the highest log index held by a quorum.
fn quorum_log(leader: &ClusterNode) -> QuorumLog {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut watch = leader.metrics_watch();
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let index = {
                let m = watch.borrow_and_update();
                let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                let mut held: Vec<u64> = voters
                    .iter()
                    .map(|v| {
                        let replicated = m
                            .replication
                            .as_ref()
                            .and_then(|r| r.get(v).copied().flatten())
                            .map(|l| l.index);
                        match replicated {
                            Some(i) => i,
                            None if *v == m.id => m.last_log_index.unwrap_or(0),
                            None => 0,
                        }
                    })
                    .collect();
                held.sort_unstable_by(|a, b| b.cmp(a));
                held.get(voters.len() / 2).copied().unwrap_or(0)
            };
            sink.lock()
                .expect("quorum log")
                .push((Instant::now(), index));
            if watch.changed().await.is_err() || Arc::strong_count(&sink) == 1 {
                break;
            }
        }
    });
    QuorumLog(log)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

async fn next_outcome(rx: &mut mpsc::UnboundedReceiver<ReconcileOutcome>) -> ReconcileOutcome {
    tokio::time::timeout(Duration::from_secs(600), rx.recv())
        .await
        .expect("no reconcile within 600 s")
        .expect("controller stopped")
}

fn check_state(leader: &ClusterNode, owner: &Owner, ids: &[u64]) {
    let owned: BTreeSet<CidKey> = leader
        .store()
        .owned_by(owner)
        .expect("owned_by")
        .into_keys()
        .collect();
    let want: BTreeSet<CidKey> = ids.iter().map(|i| seq_cid(*i)).collect();
    assert!(
        owned == want,
        "the state does not hold exactly the new CIDs"
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: u64 = std::env::var("PINFLEET_BENCH_PINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let root = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let nodes = pinfleet::testkit::start_cluster(3, root.path(), &cancel, &tasks, |opts| {
        opts.write_timeout = Duration::from_secs(300);
        opts.snapshot_logs_since_last = 100_000;
    })
    .await
    .expect("cluster");
    let leader = nodes
        .iter()
        .find(|x| x.is_leader())
        .expect("leader")
        .clone();

    // The leader's REST API with one generic webhook receiver.
    let (hook_tx, mut hook_rx) = mpsc::channel::<String>(16);
    let hooks = webhook::router(
        vec![Receiver::new("bench", ReceiverKind::Generic, SECRET)],
        hook_tx,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("addr"));
    let state = ApiState::new(leader.clone(), "0.0.0-bench", "bench");
    tasks.spawn(pinfleet::api::serve_with(
        listener,
        state,
        Some(hooks),
        None,
        cancel.clone(),
    ));

    // The remote: a bare repository whose HEAD is main.
    let remote_dir = root.path().join("remote.git");
    let repo = Repository::init_bare(&remote_dir).expect("bare repo");
    repo.set_head("refs/heads/main").expect("head");
    let t = Instant::now();
    let rev0 = ids(n, 0);
    let sha0 = commit(&repo, &rev0);
    println!(
        "setup: {n} CIDs committed ({:.1} MiB list) in {}",
        list(&rev0).len() as f64 / (1 << 20) as f64,
        secs(t.elapsed())
    );

    let url = format!("file://{}#ref=main", remote_dir.display());
    let source = GitSource::parse(
        &url,
        &root.path().join("cache"),
        Credentials::default(),
        Limits::default(),
    )
    .expect("git source");
    let opts = ControllerOptions {
        source: source.name(),
        force: false,
        requests: Default::default(),
    };
    let client = Client::new(&api).expect("client");
    let owner = Owner::pinset(PinSetId::new("bench", "mirror"));

    // The controller: polls hourly, fetches at once on a webhook.
    let (trigger_tx, trigger_rx) = mpsc::channel::<()>(1);
    tasks.spawn(async move {
        while hook_rx.recv().await.is_some() {
            let _ = trigger_tx.try_send(());
        }
    });
    let (out_tx, mut outs) = mpsc::unbounded_channel();
    let t = Instant::now();
    let ctl_cancel = cancel.child_token();
    let ctl_task = tokio::spawn(run_git(
        Controller::new(client.clone(), opts.clone()),
        source.clone(),
        Duration::from_secs(3600),
        trigger_rx,
        ctl_cancel.clone(),
        move |o: &ReconcileOutcome| {
            let _ = out_tx.send(o.clone());
        },
    ));
    let first = next_outcome(&mut outs).await;
    assert!(first.healthy(), "{first:?}");
    assert_eq!(
        first.revision.as_deref(),
        Some(format!("main@sha1:{sha0}").as_str())
    );
    committed(&leader, &owner, &format!("main@sha1:{sha0}")).await;
    println!(
        "initial apply of {n} pins through the controller: {}",
        secs(t.elapsed())
    );

    // 1% changes, webhook → committed. Three in a row: the first one
    // follows the initial ingest while the peers' disks still flush it.
    let http = pinfleet::tls::client(None)
        .expect("http client")
        .build()
        .expect("http client");
    let mut rev = 0;
    for _ in 0..3 {
        rev += 1;
        let ids_now = ids(n, rev);
        let sha = commit(&repo, &ids_now);
        let revision = format!("main@sha1:{sha}");
        let commits = quorum_log(&leader);
        let t = Instant::now();
        send_hook(&http, &api).await;
        committed(&leader, &owner, &revision).await;
        let visible = t.elapsed();
        let entry = leader.metrics().last_applied.map_or(0, |l| l.index);
        let raft_commit = commits.when(entry, t);
        let out = next_outcome(&mut outs).await;
        assert!(out.healthy(), "{out:?}");
        let o = &out.pinsets[0];
        assert_eq!((o.add, o.release), (n / 100, n / 100), "{o:?}");
        println!(
            "1% change #{rev} ({} added, {} released), webhook → revision committed by a Raft quorum: {}; → applied by the leader (visible in GET /pinsets): {}",
            o.add,
            o.release,
            secs(raft_commit),
            secs(visible),
        );
        check_state(&leader, &owner, &ids_now);
    }

    // No-op poll: the webhook finds the same commit. CPU of the whole
    // process, less what the idle cluster burns in the same wall time.
    let idle_wall = Duration::from_secs(2);
    let c = cpu_time();
    tokio::time::sleep(idle_wall).await;
    let idle_rate = (cpu_time() - c).as_secs_f64() / idle_wall.as_secs_f64();
    let mut samples = Vec::new();
    for _ in 0..5 {
        let (c, t) = (cpu_time(), Instant::now());
        send_hook(&http, &api).await;
        let out = next_outcome(&mut outs).await;
        let (cpu, wall) = (cpu_time() - c, t.elapsed());
        assert!(out.skipped, "{out:?}");
        samples.push((cpu, wall));
    }
    samples.sort();
    let (cpu, wall) = samples[samples.len() / 2];
    println!(
        "no-op poll (same commit): {} CPU in {} wall (idle cluster: {:.3} s CPU per s; median of 5)",
        secs(cpu),
        secs(wall),
        idle_rate
    );

    // The same steps one by one, for a breakdown (a second 1% change), with
    // the controller that ran above.
    ctl_cancel.cancel();
    let mut ctl = tokio::time::timeout(Duration::from_secs(60), ctl_task)
        .await
        .expect("controller stops")
        .expect("controller task");
    // For reference, a source that copies the objects through a pack as it
    // would from a remote on another machine.
    let mut packed = GitSource::parse(
        &url,
        &root.path().join("cache-packed"),
        Credentials::default(),
        Limits::default(),
    )
    .expect("git source");
    packed.share_local_objects = false;
    packed.fetch().await.expect("fetch");
    let rev2 = ids(n, rev + 1);
    let sha2 = commit(&repo, &rev2);
    let t = Instant::now();
    let fetched = source.fetch().await.expect("fetch");
    let t_fetch = t.elapsed();
    assert_eq!(fetched.sha, sha2);
    let t = Instant::now();
    packed.fetch().await.expect("fetch");
    let t_packed = t.elapsed();
    let t = Instant::now();
    let loaded = source
        .load_after(&fetched, ctl.take_previous())
        .await
        .expect("load");
    let t_load = t.elapsed();
    let t = Instant::now();
    let (base, changes) = loaded.changes.clone().expect("an incremental load");
    let c = &changes[&PinSetId::new("bench", "mirror")];
    let doc = PatchDocument::new(
        base.clone(),
        loaded.digest.clone(),
        &loaded.pinsets[0],
        &c.set,
        &c.release,
    );
    let body = serde_json::to_vec(&doc).expect("json");
    let t_plan = t.elapsed();
    let t = Instant::now();
    let out = ctl.reconcile(Ok(loaded), false).await;
    let t_apply = t.elapsed();
    assert!(out.healthy(), "{out:?}");
    check_state(&leader, &owner, &rev2);
    println!(
        "breakdown of a 1% change: fetch {} (through a pack: {}), load (diff of the list, changed lines parsed) {}, patch document (built + encoded, {} KiB) {}, REST apply (list pinsets, PATCH: transfer, read barrier, plan, consensus) {}",
        secs(t_fetch),
        secs(t_packed),
        secs(t_load),
        body.len() / 1024,
        secs(t_plan),
        secs(t_apply)
    );

    // The consensus part alone: a third 1% change applied to the leader
    // directly (no REST), from the same kind of incremental load.
    let rev3 = ids(n, rev + 2);
    commit(&repo, &rev3);
    packed.fetch().await.expect("fetch");
    let fetched = source.fetch().await.expect("fetch");
    let loaded = source
        .load_after(&fetched, ctl.take_previous())
        .await
        .expect("load");
    let (base, mut changes) = loaded.changes.clone().expect("an incremental load");
    let c = changes
        .remove(&PinSetId::new("bench", "mirror"))
        .expect("changes");
    let ps = &loaded.pinsets[0];
    let t = Instant::now();
    let r = pinsets::apply_patch(
        &leader,
        PinSetPatch {
            id: ps.id.clone(),
            base_revision: base,
            revision: loaded.digest.clone(),
            source: opts.source.clone(),
            labels: ps.labels.clone(),
            prune: ps.prune,
            suspend: ps.suspend,
            pins: ps.pins.len() as u64,
            set: c.set,
            release: c.release,
            guard: PruneGuard::default(),
            dry_run: false,
        },
    )
    .await
    .expect("patch")
    .expect("base revision held");
    println!(
        "consensus alone (read barrier, lookups, {} log entries committed and applied on the leader): {}",
        r.entries,
        secs(t.elapsed())
    );
    check_state(&leader, &owner, &rev3);

    // Before this work, for comparison: the same kind of 1% change fetched
    // through a pack, loaded in full and sent whole (PUT), by a controller
    // that keeps no previous load.
    let rev4 = ids(n, rev + 3);
    let sha4 = commit(&repo, &rev4);
    let t = Instant::now();
    let fetched = packed.fetch().await.expect("fetch");
    let t_fetch = t.elapsed();
    let t = Instant::now();
    let loaded = packed.load(&fetched).await.expect("load");
    let t_checkout_load = t.elapsed();
    let dir = packed.cache_dir.join(format!("rev-{sha4}"));
    let t = Instant::now();
    let again = pinfleet::manifest::load_paths(&[dir], &Limits::default()).expect("load");
    let t_load = t.elapsed();
    assert_eq!(again.pin_count(), loaded.pin_count());
    let t = Instant::now();
    let doc = pinfleet::wire::to_manifest_json(&loaded.pinsets[0]).to_string();
    let t_doc = t.elapsed();
    let mut whole = Controller::new(client.clone(), opts.clone());
    let t = Instant::now();
    let out = whole.reconcile(Ok(loaded), false).await;
    let t_put = t.elapsed();
    assert!(out.healthy(), "{out:?}");
    check_state(&leader, &owner, &rev4);
    println!(
        "before (whole PinSet): fetch through a pack {}, checkout + full load {} (of which the load itself {}), PUT of the whole PinSet {} (its JSON alone: {}, {:.1} MiB)",
        secs(t_fetch),
        secs(t_checkout_load),
        secs(t_load),
        secs(t_put),
        secs(t_doc),
        doc.len() as f64 / (1 << 20) as f64,
    );

    cancel.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
    drop(root);
}
