//! manifests/monitoring/: the PrometheusRule has the operator's shape, the
//! Grafana dashboard covers what docs/metrics.md promises, and every PromQL
//! expression of both parses and selects only metrics pinfleet exposes
//! (`pinfleet::api::METRICS`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use pinfleet::api::{METRICS, MetricKind};
use promql_parser::parser::{self, Expr};
use serde_json::Value;

fn monitoring(file: &str) -> PathBuf {
    crate::support::repo_path("manifests/monitoring").join(file)
}

fn rule() -> Value {
    let text = std::fs::read_to_string(monitoring("prometheusrule.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The metric names `expr` selects.
fn selected(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(a) => {
            selected(&a.expr, out);
            if let Some(p) = &a.param {
                selected(p, out);
            }
        }
        Expr::Unary(u) => selected(&u.expr, out),
        Expr::Binary(b) => {
            selected(&b.lhs, out);
            selected(&b.rhs, out);
        }
        Expr::Paren(p) => selected(&p.expr, out),
        Expr::Subquery(s) => selected(&s.expr, out),
        Expr::VectorSelector(v) => {
            out.insert(v.name.clone().expect("a selector without a metric name"));
        }
        Expr::MatrixSelector(m) => {
            out.insert(m.vs.name.clone().expect("a selector without a metric name"));
        }
        Expr::Call(c) => c.args.args.iter().for_each(|a| selected(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Parses `expr` (Grafana's interval variables stood in for) and returns
/// the metrics it selects; panics naming `at` when it does not parse or
/// selects a metric pinfleet does not expose.
fn check_promql(at: &str, expr: &str) -> BTreeSet<String> {
    let expr_text = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m");
    let parsed = parser::parse(&expr_text).unwrap_or_else(|e| panic!("{at}: {expr}: {e}"));
    let mut names = BTreeSet::new();
    selected(&parsed, &mut names);
    assert!(!names.is_empty(), "{at}: {expr} selects no metric");
    for name in &names {
        assert!(
            known(name),
            "{at}: {expr}: {name} is not in the metrics table"
        );
    }
    names
}

/// Whether `name` is a series pinfleet exposes: a metric of the table, or
/// a histogram's `_bucket`, `_sum` or `_count`.
fn known(name: &str) -> bool {
    METRICS.iter().any(|m| {
        m.name == name
            || (m.kind == MetricKind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(m.name)))
    })
}

fn str_at<'a>(v: &'a Value, at: &str, field: &str) -> &'a str {
    v[field]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| panic!("{at}: no {field}"))
}

#[test]
fn the_prometheus_rule_has_the_operators_shape_and_every_alert_selects_known_metrics() {
    let rule = rule();
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    str_at(&rule["metadata"], "metadata", "name");
    str_at(&rule["metadata"], "metadata", "namespace");
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    assert!(!groups.is_empty());
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    for g in groups {
        let gname = str_at(g, "group", "name");
        let rules = g["rules"]
            .as_array()
            .unwrap_or_else(|| panic!("{gname}: no rules"));
        assert!(!rules.is_empty(), "{gname}: no rules");
        for r in rules {
            let alert = str_at(r, gname, "alert");
            let at = format!("{gname}/{alert}");
            assert!(alerts.insert(alert.to_string()), "{at}: alert named twice");
            let fields: BTreeSet<&str> =
                r.as_object().unwrap().keys().map(String::as_str).collect();
            let allowed = BTreeSet::from(["alert", "expr", "for", "labels", "annotations"]);
            assert!(
                fields.is_subset(&allowed),
                "{at}: unexpected fields {fields:?}"
            );
            used.extend(check_promql(&at, str_at(r, &at, "expr")));
            let wait = str_at(r, &at, "for");
            assert!(
                parser::parse(&format!("vector(1)[{wait}:]")).is_ok(),
                "{at}: for: {wait} is not a duration"
            );
            let severity = str_at(&r["labels"], &at, "severity");
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{at}: severity {severity}"
            );
            str_at(&r["annotations"], &at, "summary");
            str_at(&r["annotations"], &at, "description");
        }
    }
    // The formal health metrics (docs/metrics.md) each have an alert.
    for formal in [
        "pinfleet_local_oldest_not_pinned_age_seconds",
        "pinfleet_local_pins_not_pinned",
        "pinfleet_pins_below_replication_min",
        "pinfleet_reconciles_total",
        "pinfleet_raft_leader_changes_total",
        "pinfleet_raft_has_leader",
    ] {
        assert!(used.contains(formal), "no alert on {formal}: {used:?}");
    }
    // docs/metrics.md lists exactly these alerts.
    let doc = std::fs::read_to_string(crate::support::repo_path("docs/metrics.md")).unwrap();
    for alert in &alerts {
        assert!(
            doc.contains(&format!("| `{alert}` |")),
            "{alert} is not in docs/metrics.md"
        );
    }
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

#[test]
fn the_grafana_dashboard_covers_the_five_topics_with_known_metrics_and_a_datasource_variable() {
    let d = dashboard();
    str_at(&d, "dashboard", "title");
    str_at(&d, "dashboard", "uid");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a prometheus datasource variable");
    let var = format!("${{{}}}", str_at(ds, "variable", "name"));
    // What each panel's targets select, by title.
    let mut topics: Vec<(String, BTreeSet<String>)> = Vec::new();
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = str_at(p, "panel", "title").to_string();
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "{title}: id twice"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], var.as_str(), "{title}: datasource");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut names = BTreeSet::new();
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"],
                var.as_str(),
                "{title}: target datasource"
            );
            names.extend(check_promql(&title, str_at(t, &title, "expr")));
        }
        topics.push((title, names));
    }
    for (topic, metric) in [
        ("PinSet readiness", "pinfleet_pinset_condition"),
        ("Pins by status per peer", "pinfleet_local_pins"),
        ("Tracker queue", "pinfleet_local_pin_queue"),
        (
            "Reconcile durations",
            "pinfleet_reconcile_duration_seconds_bucket",
        ),
        ("Raft commit index", "pinfleet_raft_applied_index"),
        ("Raft leader", "pinfleet_leader"),
    ] {
        assert!(
            topics
                .iter()
                .any(|(title, names)| title.starts_with(topic) && names.contains(metric)),
            "no panel {topic:?} showing {metric}"
        );
    }
}

#[test]
fn the_monitoring_kustomization_makes_the_dashboard_a_configmap_and_stays_out_of_the_default() {
    let text = std::fs::read_to_string(monitoring("kustomization.yaml")).unwrap();
    let k: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(k["resources"], serde_json::json!(["prometheusrule.yaml"]));
    let generator = &k["configMapGenerator"][0];
    assert_eq!(
        generator["files"],
        serde_json::json!(["grafana-dashboard.json"])
    );
    assert_eq!(generator["options"]["labels"]["grafana_dashboard"], "1");
    let top =
        std::fs::read_to_string(crate::support::repo_path("manifests/kustomization.yaml")).unwrap();
    assert!(
        !top.contains("monitoring"),
        "the default deployment needs no operator CRDs"
    );
}

#[test]
fn an_expression_selecting_an_unknown_metric_is_caught() {
    let caught = std::panic::catch_unwind(|| check_promql("t", "rate(pinfleet_nope_total[5m])"));
    assert!(caught.is_err());
    let caught = std::panic::catch_unwind(|| check_promql("t", "sum by (x (pinfleet_pins)"));
    assert!(caught.is_err());
    let names = check_promql(
        "t",
        "histogram_quantile(0.9, sum by (le) (rate(pinfleet_reconcile_duration_seconds_bucket[$__rate_interval])))",
    );
    assert_eq!(
        names,
        BTreeSet::from(["pinfleet_reconcile_duration_seconds_bucket".to_string()])
    );
}
