//! docs/metrics.md cannot drift from the program: its table lists exactly
//! the metrics of `pinfleet::api::METRICS` (name, type, labels), every
//! metric name it mentions is one of them, and a live testbed's `GET
//! /metrics` exposes exactly those families, with the formal health
//! metrics holding what they say.

use std::collections::{BTreeMap, BTreeSet};

use pinfleet::api::{METRICS, MetricKind};

use crate::status::eventually;
use crate::support::{cid_v1, http, pinset_yaml};

fn doc() -> String {
    std::fs::read_to_string(crate::support::repo_path("docs/metrics.md")).unwrap()
}

/// The rows of the table under "## Every metric": name → (type, labels).
fn documented(doc: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let section = doc
        .split("\n## Every metric\n")
        .nth(1)
        .expect("docs/metrics.md has no \"## Every metric\" section");
    let section = section.split("\n## ").next().unwrap();
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "not name | type | labels | meaning: {line}");
        let name = cells[0].trim_matches('`').to_string();
        let labels = cells[2]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        assert!(
            out.insert(name.clone(), (cells[1].to_string(), labels))
                .is_none(),
            "{name} documented twice"
        );
    }
    out
}

/// Every `pinfleet_…` word in `text`, with a trailing `*` kept (a prefix).
fn mentioned(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("pinfleet_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '*')
            .collect();
        rest = &rest[at + word.len()..];
        out.insert(word);
    }
    out
}

#[test]
fn the_metrics_doc_lists_exactly_the_metrics_table_with_types_and_labels() {
    let doc = doc();
    let rows = documented(&doc);
    let table: BTreeMap<String, (String, Vec<String>)> = METRICS
        .iter()
        .map(|m| {
            let labels = m.labels.iter().map(ToString::to_string).collect();
            (m.name.to_string(), (m.kind.as_str().to_string(), labels))
        })
        .collect();
    assert_eq!(
        rows, table,
        "docs/metrics.md and src/api/metrics/catalog.rs differ"
    );
    // Names in prose and examples are real too (a histogram's series, a
    // prefix ending in `_*`).
    for word in mentioned(&doc) {
        let ok = match word.strip_suffix('*') {
            Some(prefix) => METRICS.iter().any(|m| m.name.starts_with(prefix)),
            None => METRICS.iter().any(|m| {
                m.name == word
                    || (m.kind == MetricKind::Histogram
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| word.strip_suffix(s) == Some(m.name)))
            }),
        };
        assert!(
            ok,
            "docs/metrics.md mentions {word}, which pinfleet does not expose"
        );
    }
}

/// The families of an exposition (`# TYPE` lines), under the names PromQL
/// selects (a counter's with `_total`), with their types.
fn families(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            (name, kind.to_string())
        })
        .collect()
}

/// The value of the sample `series` (name and labels as exposed).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

async fn metrics(api: &str) -> String {
    let resp = http().get(format!("{api}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_testbed_exposes_exactly_the_metrics_table_and_the_formal_metrics_hold() {
    let dir = tempfile::tempdir().unwrap();
    let testbed = crate::support::embedded_testbed(&dir.path().join("tb"), false).await;
    let api: Vec<String> = testbed.file.peers.iter().map(|p| p.api.clone()).collect();

    // A PinSet of one CID no IPFS node holds: applied, never pinned.
    let cid = cid_v1("metrics-docs: nobody has this");
    let resp = http()
        .put(format!("{}/pinsets/mon/docs", api[0]))
        .body(pinset_yaml("mon", "docs", std::slice::from_ref(&cid)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    // A controller's report of a failed reconcile that took 1.5 s.
    let report = serde_json::json!({
        "source": "dir:/it/metrics",
        "conditions": [{
            "type": "Stalled",
            "status": "True",
            "reason": "PruneGuard",
            "message": "refused",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }],
        "reconcile": {
            "trigger": "change",
            "ok": false,
            "message": "PruneGuard: refused",
            "durationMs": 1500,
        },
    });
    let resp = http()
        .put(format!("{}/pinsets/mon/docs/conditions", api[0]))
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "{:?}", resp.text().await);

    let want: BTreeMap<String, String> = METRICS
        .iter()
        .map(|m| (m.name.to_string(), m.kind.as_str().to_string()))
        .collect();
    let reconciles = r#"pinfleet_reconciles_total{namespace="mon",name="docs",source="dir:/it/metrics",result="failed"}"#;
    let body = eventually("the pinset and its reconcile in peer 0's metrics", || {
        let api = api[0].clone();
        async move {
            let body = metrics(&api).await;
            let applied = sample(
                &body,
                r#"pinfleet_pinset_pins{namespace="mon",name="docs"}"#,
            );
            let not_pinned: f64 = ["under_5m", "5m_to_1h", "1h_to_24h", "over_24h"]
                .iter()
                .filter_map(|a| {
                    sample(
                        &body,
                        &format!("pinfleet_local_pins_not_pinned{{age=\"{a}\"}}"),
                    )
                })
                .sum();
            (applied == Some(1.0) && not_pinned >= 1.0).then_some(body)
        }
    })
    .await;
    assert_eq!(
        families(&body),
        want,
        "peer 0's /metrics and the metrics table differ"
    );
    assert_eq!(sample(&body, reconciles), Some(1.0), "{body}");
    let count = r#"pinfleet_reconcile_duration_seconds_count{source="dir:/it/metrics"}"#;
    assert_eq!(sample(&body, count), Some(1.0), "{body}");
    let le1 = r#"pinfleet_reconcile_duration_seconds_bucket{le="1.0",source="dir:/it/metrics"}"#;
    let le25 = r#"pinfleet_reconcile_duration_seconds_bucket{le="2.5",source="dir:/it/metrics"}"#;
    assert_eq!(
        (sample(&body, le1), sample(&body, le25)),
        (Some(0.0), Some(1.0)),
        "{body}"
    );
    // The pin that cannot be found is young and not pinned; its peers'
    // oldest not-pinned age is under the 5 minutes its bucket says.
    assert!(sample(&body, r#"pinfleet_local_pins_not_pinned{age="under_5m"}"#) >= Some(1.0));
    let oldest = sample(&body, "pinfleet_local_oldest_not_pinned_age_seconds").unwrap();
    assert!(oldest < 300.0, "{oldest}");

    // Every peer: the same families, but for the reconcile ones, which
    // appear once a controller reported to the peer (only peer 0 here); a
    // leader elected and known; every pin allocated as often as its
    // replication minimum asks.
    let mut leaders = 0.0;
    for a in &api[1..] {
        let body = metrics(a).await;
        let mut want = want.clone();
        want.remove("pinfleet_reconciles_total");
        want.remove("pinfleet_reconcile_duration_seconds");
        assert_eq!(
            families(&body),
            want,
            "{a}/metrics and the metrics table differ"
        );
    }
    for a in &api {
        let body = metrics(a).await;
        assert_eq!(sample(&body, "pinfleet_raft_has_leader"), Some(1.0), "{a}");
        assert!(
            sample(&body, "pinfleet_raft_leader_changes_total") >= Some(1.0),
            "{a}"
        );
        assert!(
            sample(&body, "pinfleet_raft_applied_index") >= Some(1.0),
            "{a}"
        );
        assert!(sample(&body, "pinfleet_raft_term") >= Some(1.0), "{a}");
        assert_eq!(
            sample(&body, "pinfleet_pins_below_replication_min"),
            Some(0.0),
            "{a}"
        );
        leaders += sample(&body, "pinfleet_leader").unwrap();
    }
    assert_eq!(leaders, 1.0);
    testbed.stop().await;
}
