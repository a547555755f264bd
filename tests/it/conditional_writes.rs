//! Conditional, idempotent PinSet writes (DESIGN §9). On real in-process
//! peers: concurrent applies of one PinSet never interleave (in the state
//! and through the REST API), and a retried commit answers what its first
//! attempt did; bounded in rounds and time. Against a scripted API that
//! answers conflicts as the real one renders them: the client, `pinfleet
//! apply` and the controller treat a conflict as "plan it again".

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinfleet::api::{ApiError, ApiState};
use pinfleet::consensus::ClusterError;
use pinfleet::controller::{ConditionType, Controller, ControllerOptions, Reason};
use pinfleet::manifest::Limits;
use pinfleet::manifest::{
    CidKey, DesiredPinSet, Owner, PinOptions, PinSetId, PinSpec, ReplicationFactors,
};
use pinfleet::pinsets::{self, PinSetApply};
use pinfleet::plan::PruneGuard;
use pinfleet::source::DirSource;
use pinfleet::state::{Command, Op, Outcome};
use pinfleet::wire::ApplyReport;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Peer, cid, cluster, leader_index, pinset, wait_for};
use crate::support::{cid_v1, outcome, pinset_yaml, write_tree};

const ROUNDS: u64 = 20;
const ROUND_DEADLINE: Duration = Duration::from_secs(30);

/// Round `round`'s manifest of writer `writer` (0 or 1): overlapping CID
/// ranges that move every round (so each apply adds, updates and
/// releases), with options and names of its own.
fn manifest(round: u64, writer: u64) -> DesiredPinSet {
    let start = round * 10 + writer * 30;
    let mut ps = pinset("race", start..start + 60);
    let options = Arc::new(PinOptions {
        replication: ReplicationFactors {
            min: 1 + writer as i32,
            max: 2 + writer as i32,
        },
        metadata: BTreeMap::from([("writer".to_string(), writer.to_string())]),
        ..PinOptions::default()
    });
    for (c, pin) in ps.pins.iter_mut() {
        pin.spec = PinSpec {
            name: format!("w{writer}-{c}"),
            options: Arc::clone(&options),
        };
    }
    ps
}

fn request(ps: DesiredPinSet, revision: String) -> PinSetApply {
    PinSetApply {
        pinset: ps,
        revision,
        source: "test".into(),
        guard: PruneGuard {
            max_fraction: 1.0,
            force: true,
        },
        dry_run: false,
    }
}

fn wanted(ps: &DesiredPinSet) -> BTreeMap<CidKey, PinSpec> {
    ps.pins.iter().map(|(c, p)| (*c, p.spec.clone())).collect()
}

fn applied_index(p: &Peer) -> Option<u64> {
    p.node.metrics().last_applied.map(|l| l.index)
}

/// Two applies of different manifests to one PinSet, at once, on the leader
/// and on a follower (forwarded), 20 times: after each round every peer
/// holds exactly one of the two manifests — pins, names and options — the
/// one whose apply answered Ok last; the other was refused as a conflict
/// (or, planned after the first committed, applied on top of it whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_of_one_pinset_never_interleave() {
    let root = tempfile::tempdir().unwrap();
    // Small chunks: each apply is several log entries, so the two overlap.
    let peers = cluster(3, root.path(), 10).await;
    let owner = Owner::pinset(PinSetId::new("default", "race"));
    let mut conflicts = 0;
    for round in 0..ROUNDS {
        let leader = leader_index(&peers);
        let follower = (leader + 1) % peers.len();
        let (a, b) = (manifest(round, 0), manifest(round, 1));
        let (ra, rb) = (format!("r{round}-a"), format!("r{round}-b"));
        let (out_a, out_b) = tokio::time::timeout(ROUND_DEADLINE, async {
            tokio::join!(
                pinsets::apply(&peers[leader].node, request(a.clone(), ra.clone())),
                pinsets::apply(&peers[follower].node, request(b.clone(), rb.clone())),
            )
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: applies did not answer in time"));
        for out in [&out_a, &out_b] {
            match out {
                Ok(r) => assert_eq!(r.refused, None, "round {round}"),
                Err(ClusterError::Refused(m)) => {
                    assert!(
                        m.contains("pinset default/race changed since this apply was planned")
                            && m.ends_with("nothing applied; apply again"),
                        "round {round}: {m}"
                    );
                    conflicts += 1;
                }
                Err(e) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert!(
            out_a.is_ok() || out_b.is_ok(),
            "round {round}: one apply wins"
        );

        // Every peer has applied what the leader has.
        let target = applied_index(&peers[leader]);
        for p in &peers {
            wait_for("the round applied everywhere", || {
                applied_index(p) >= target
            })
            .await;
        }
        let record = peers[leader].node.store().pinset(&owner).unwrap().unwrap();
        let (winner, won) = if record.revision == ra {
            (&a, &out_a)
        } else {
            assert_eq!(record.revision, rb, "round {round}");
            (&b, &out_b)
        };
        assert!(
            won.is_ok(),
            "round {round}: the recorded revision answered Ok"
        );
        for (i, p) in peers.iter().enumerate() {
            let held = p.node.store().owned_by(&owner).unwrap();
            assert!(
                held == wanted(winner),
                "round {round}: peer {i} holds {} pins, not exactly revision {}",
                held.len(),
                record.revision
            );
            assert_eq!(
                p.node.store().pinset(&owner).unwrap().as_ref(),
                Some(&record)
            );
        }
    }
    eprintln!("{conflicts} conflicts refused in {ROUNDS} rounds");
    assert!(
        conflicts > 0,
        "the two applies never overlapped: the test did not race"
    );
    for p in peers {
        p.stop().await;
    }
}

/// A commit sent again after it was committed (its reply lost, or a new
/// leader asked again) answers the first outcome; so does a chunk staged
/// again after the commit, which is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_commit_reports_the_first_outcome() {
    let root = tempfile::tempdir().unwrap();
    let peers = cluster(3, root.path(), 10_000).await;
    let follower = &peers[(leader_index(&peers) + 1) % peers.len()].node;
    let owner = Owner::pinset(PinSetId::new("default", "retried"));
    let spec = PinSpec {
        name: "x".into(),
        options: Arc::new(PinOptions::default()),
    };
    let set = |i: u64| Op::Set {
        cid: cid(i),
        written_as: None,
        spec: spec.clone(),
    };
    let stage = Command::Stage {
        owner: owner.clone(),
        revision: 41,
        seq: 0,
        ops: (0..5).map(set).collect(),
    };
    let commit = Command::Commit {
        owner: owner.clone(),
        revision: 41,
        base: Some(0),
        staged: 1,
        ops: (5..8).map(set).collect(),
        record: None,
    };
    follower.write(stage.clone()).await.unwrap();
    let first = follower.write(commit.clone()).await.unwrap();
    assert_eq!((first.created, first.refused.as_deref()), (8, None));

    // Sent again: the chunk, then the commit.
    assert_eq!(follower.write(stage).await.unwrap().staged, 5);
    let again = follower.write(commit).await.unwrap();
    // Each write is answered with the index of its own log entry.
    assert!(again.log_index > first.log_index, "{again:?} {first:?}");
    let applied = |o: Outcome| Outcome {
        log_index: None,
        ..o
    };
    assert_eq!(
        applied(again),
        applied(first),
        "the first outcome, not \"0 of 1 chunks staged\""
    );
    for p in &peers {
        wait_for("8 pins everywhere", || {
            p.node.store().owned_by(&owner).unwrap().len() == 8
        })
        .await;
        assert_eq!(p.node.store().generation(&owner).unwrap(), 1);
    }
    for p in peers {
        p.stop().await;
    }
}

/// Pins `text` as `tests/it/snapshots/<name>.snap` (see `snapshots.rs`),
/// with the generation numbers a race produces replaced.
fn snapshot(name: &str, text: &str) {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.set_snapshot_path("snapshots");
    s.add_filter(r"generation \d+, now \d+", "generation [G], now [G]");
    s.bind(|| insta::assert_snapshot!(name, text));
}

/// Serves the REST API of `node` on 127.0.0.1:0; its URL.
async fn serve_api(node: &pinfleet::consensus::ClusterNode, cancel: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(node.clone(), "0.0.0-it", "it");
    tokio::spawn(pinfleet::api::serve(listener, state, cancel.clone()));
    url
}

/// The same race through the REST API of two peers: the loser is answered
/// 409 with the error body every refusal has (`code`, `message`), naming
/// what happened; the winner 200 with its report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflicting_put_is_answered_409_with_the_error_body() {
    let root = tempfile::tempdir().unwrap();
    let peers = cluster(3, root.path(), 10).await;
    let cancel = CancellationToken::new();
    let leader = leader_index(&peers);
    let urls = [
        serve_api(&peers[leader].node, &cancel).await,
        serve_api(&peers[(leader + 1) % 3].node, &cancel).await,
    ];
    let http = crate::support::http();
    let put = |url: &str, ps: &DesiredPinSet, revision: &str| {
        http.put(format!(
            "{url}/pinsets/default/race?force=true&revision={revision}"
        ))
        .body(pinfleet::wire::to_manifest_json(ps).to_string())
        .send()
    };
    let owner = Owner::pinset(PinSetId::new("default", "race"));
    let mut conflict = None;
    for round in 0..ROUNDS {
        let (a, b) = (manifest(round, 0), manifest(round, 1));
        let (ra, rb) = (format!("r{round}-a"), format!("r{round}-b"));
        let (resp_a, resp_b) = tokio::time::timeout(ROUND_DEADLINE, async {
            tokio::join!(put(&urls[0], &a, &ra), put(&urls[1], &b, &rb))
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: no answer in time"));
        let mut answers = Vec::new();
        for resp in [resp_a.unwrap(), resp_b.unwrap()] {
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap();
            match status.as_u16() {
                200 => assert!(body["refused"].is_null(), "round {round}: {body}"),
                409 => conflict = Some(body.clone()),
                other => panic!("round {round}: {other} {body}"),
            }
            answers.push(status.as_u16());
        }
        assert!(answers.contains(&200), "round {round}: one apply wins");
        let target = applied_index(&peers[leader]);
        for p in &peers {
            wait_for("the round applied everywhere", || {
                applied_index(p) >= target
            })
            .await;
        }
        let record = peers[leader].node.store().pinset(&owner).unwrap().unwrap();
        let winner = if record.revision == ra { &a } else { &b };
        let won = if record.revision == ra {
            answers[0]
        } else {
            answers[1]
        };
        assert_eq!(
            won, 200,
            "round {round}: the recorded revision answered 200"
        );
        for p in &peers {
            let held = p.node.store().owned_by(&owner).unwrap();
            assert!(held == wanted(winner), "round {round}: interleaved");
        }
        if conflict.is_some() {
            break;
        }
    }
    let body = conflict.expect("no round raced");
    snapshot(
        "put_pinset_conflict_409",
        &format!(
            "PUT /pinsets/default/race (raced)\n409 Conflict\n--- json\n{}",
            serde_json::to_string_pretty(&body).unwrap()
        ),
    );
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["code", "message"], "{body}");
    assert_eq!(body["code"], 409);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "refused: pinset default/race changed since this apply was planned (generation "
        ) && message.ends_with("): nothing applied; apply again"),
        "{message}"
    );
    cancel.cancel();
    for p in peers {
        p.stop().await;
    }
}

/// A scripted pinfleet API for the clients of a PinSet write: `PUT
/// /pinsets/{ns}/{name}` answers the queued answers in order (the
/// conflict exactly as the real API renders it), `GET /pinsets` an empty
/// list, conditions 204. Counts the PUTs.
#[derive(Clone)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    puts: Arc<AtomicUsize>,
}

/// What the scripted API answers a PUT.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 with a report.
    Applied,
    /// 409 with a report whose `refused` is set.
    Guard,
    /// 409 with an error body.
    Conflict,
}

/// The message of the scripted conflict.
const CONFLICT: &str = "pinset default/site changed since this apply was planned (generation 3, now 4): nothing applied; apply again";

impl Scripted {
    /// Answers `answers`, then [`Answer::Applied`].
    async fn start(answers: &[Answer], cancel: &CancellationToken) -> (Scripted, String) {
        use axum::routing::{get, put};
        let s = Scripted {
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            puts: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/pinsets", get(|| async { axum::Json(Vec::<u8>::new()) }))
            .route(
                "/pinsets/{ns}/{name}/conditions",
                put(|| async { axum::http::StatusCode::NO_CONTENT }),
            )
            .route("/pinsets/{ns}/{name}", put(Self::put))
            .with_state(s.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cancel = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        });
        (s, url)
    }

    async fn put(
        axum::extract::State(s): axum::extract::State<Scripted>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        s.puts.fetch_add(1, Ordering::SeqCst);
        let answer = s.answers.lock().unwrap().pop_front();
        let applied = ApplyReport {
            pinset: "default/site".into(),
            add: 2,
            entries: 1,
            created: 2,
            ..ApplyReport::default()
        };
        match answer.unwrap_or(Answer::Applied) {
            Answer::Applied => axum::Json(applied).into_response(),
            Answer::Guard => {
                let refused = ApplyReport {
                    refused: Some("prune guard: too many".into()),
                    ..ApplyReport::default()
                };
                // The real API's guard refusal (pinfleet::api::pinsets::report_response).
                (axum::http::StatusCode::CONFLICT, axum::Json(refused)).into_response()
            }
            Answer::Conflict => {
                ApiError::from(ClusterError::Refused(CONFLICT.into())).into_response()
            }
        }
    }

    fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }
}

fn site_manifest(dir: &std::path::Path) -> std::path::PathBuf {
    let cids = [cid_v1("cw-1"), cid_v1("cw-2")];
    write_tree(
        dir,
        &[("site.yaml", &pinset_yaml("default", "site", &cids))],
    );
    dir.join("site.yaml")
}

async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_client_reports_a_conflict_and_a_guard_refusal_apart() {
    let cancel = CancellationToken::new();
    let (_, url) = Scripted::start(&[Answer::Conflict, Answer::Guard], &cancel).await;
    let client = pinfleet::client::Client::new(&url).unwrap();
    let id = PinSetId::new("default", "site");
    let opts = pinfleet::client::ApplyOptions::default();
    let err = client
        .put_pinset(&id, b"{}".to_vec(), &opts)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert!(!err.is_unavailable());
    assert_eq!(err.to_string(), format!("refused: {CONFLICT} (http 409)"));
    let guard = client.put_pinset(&id, b"{}".to_vec(), &opts).await.unwrap();
    assert_eq!(guard.refused.as_deref(), Some("prune guard: too many"));
    let ok = client.put_pinset(&id, b"{}".to_vec(), &opts).await.unwrap();
    assert_eq!((ok.add, ok.refused), (2, None));
    cancel.cancel();
}

#[tokio::test]
async fn apply_plans_again_once_after_a_conflict() {
    let cancel = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let file = site_manifest(dir.path()).display().to_string();
    let (scripted, url) = Scripted::start(&[Answer::Conflict], &cancel).await;
    let o = cli(vec!["apply".into(), file, "--host".into(), url]).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(scripted.puts(), 2);
    assert!(
        stderr.contains(
            "note: pinset default/site changed while this apply was planned; planning it again"
        ),
        "{stderr}"
    );
    assert!(stdout.contains("applied"), "{stdout}");
    cancel.cancel();
}

#[tokio::test]
async fn apply_exits_2_with_the_message_after_a_second_conflict() {
    let cancel = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let file = site_manifest(dir.path()).display().to_string();
    let (scripted, url) = Scripted::start(&[Answer::Conflict, Answer::Conflict], &cancel).await;
    let o = cli(vec!["apply".into(), file, "--host".into(), url]).await;
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(scripted.puts(), 2, "planned again once, not more");
    assert!(
        stderr.contains("cannot apply pinset default/site"),
        "{stderr}"
    );
    assert!(stderr.contains(CONFLICT), "{stderr}");
    snapshot(
        "cli_apply_conflict",
        &format!(
            "$ pinfleet apply site.yaml\nexit: 2\n--- stdout\n{}--- stderr\n{stderr}",
            String::from_utf8_lossy(&o.stdout)
        ),
    );
    cancel.cancel();
}

/// The controller sends a conflicting PinSet again at once; when that
/// conflicts too, the PinSet is Reconciling (not Stalled) and the next
/// reconcile of the same revision plans it again instead of skipping it.
#[tokio::test]
async fn the_controller_treats_a_conflict_as_retryable() {
    let cancel = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    site_manifest(dir.path());
    let (scripted, url) = Scripted::start(&[Answer::Conflict, Answer::Conflict], &cancel).await;
    let source = DirSource::new(dir.path(), Limits::default()).unwrap();
    let mut ctl = Controller::new(
        pinfleet::client::Client::new(&url).unwrap(),
        ControllerOptions {
            source: source.name(),
            force: false,
            requests: Default::default(),
        },
    );
    let out = ctl.reconcile(source.load().await, false).await;
    assert_eq!(scripted.puts(), 2, "sent again once at once");
    let o = outcome(&out.pinsets, "site");
    assert_eq!(
        (o.condition, o.reason),
        (ConditionType::Reconciling, Reason::Conflict)
    );
    assert!(o.message.contains(CONFLICT), "{}", o.message);
    assert!(!out.healthy(), "not applied: not skipped next time");

    let out = ctl.reconcile(source.load().await, false).await;
    assert!(!out.skipped);
    assert_eq!(scripted.puts(), 3);
    let o = outcome(&out.pinsets, "site");
    assert_eq!(
        (o.condition, o.reason),
        (ConditionType::Ready, Reason::Succeeded)
    );
    assert!(out.healthy());
    cancel.cancel();
}
