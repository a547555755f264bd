//! manifests/ (the Kubernetes deploy files) as a cluster would read them:
//! every document is a typed Kubernetes object with no field its type does
//! not know, the RBAC grants exactly what the controller needs and no
//! wildcard, the probes hit `GET /health` on the API port, the peers'
//! environment loads as a pinfleet config, every flag and variable used is
//! one pinfleet has, every file is listed in a kustomization, the CRD copy
//! is `pinfleet crd`, and the example PinSet passes pinfleet's validation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, Namespace, Probe, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pinfleet::config::{ClusterSecret, IpfsBackendKind, ServiceConfig};
use pinfleet::manifest::{Limits, PinSet, crd_yaml, load_str};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Longest a child process (`pinfleet --help`, `kubectl kustomize`) may take.
const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// Every `*.yaml` under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
    out
}

fn is_kustomization(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()) == Some("kustomization.yaml")
}

fn rel(p: &Path) -> String {
    p.strip_prefix(manifests_dir())
        .unwrap()
        .display()
        .to_string()
}

/// One YAML document of a file under manifests/.
struct Doc {
    /// `file#index`, for messages.
    at: String,
    /// The file, relative to manifests/.
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
}

/// Every document of every file that is not a kustomization.
fn documents() -> Vec<Doc> {
    let mut out = Vec::new();
    for f in yaml_files(&manifests_dir()) {
        if is_kustomization(&f) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", rel(&f)));
        for (i, value) in docs.into_iter().enumerate() {
            out.push(Doc {
                at: format!("{}#{i}", rel(&f)),
                file: rel(&f),
                value,
            });
        }
    }
    out
}

/// Where `original` has something `typed` lacks or holds differently: a
/// field the type does not know (and so dropped) or a value it read
/// otherwise. Fields the type adds (defaults of required fields) are fine.
fn lost_fields(original: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                let sub = format!("{path}.{k}");
                match t.get(k) {
                    Some(tv) => lost_fields(v, tv, &sub, out),
                    None => out.push(format!("{sub}: unknown field")),
                }
            }
        }
        (Value::Array(o), Value::Array(t)) if o.len() == t.len() => {
            for (i, (ov, tv)) in o.iter().zip(t).enumerate() {
                lost_fields(ov, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ if original == typed => {}
        _ => out.push(format!("{path}: {original} read as {typed}")),
    }
}

/// `doc` as a `T`, with the path of the first field that does not fit, and
/// failing on any field `T` does not know.
fn strict<T: DeserializeOwned + Serialize>(doc: &Doc) -> T {
    let typed: T = serde_path_to_error::deserialize(&doc.value)
        .unwrap_or_else(|e| panic!("{}: {} at {}", doc.at, e.inner(), e.path()));
    let back = serde_json::to_value(&typed).unwrap();
    let mut lost = Vec::new();
    lost_fields(&doc.value, &back, "", &mut lost);
    assert!(lost.is_empty(), "{}: {lost:#?}", doc.at);
    typed
}

/// The single object of kind `K` named `name`.
fn object<T: DeserializeOwned + Serialize>(kind: &str, name: &str) -> T {
    let docs = documents();
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == kind && d.value["metadata"]["name"] == name)
        .filter(|d| !d.file.starts_with("kubo/"))
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name}");
    strict(found[0])
}

fn container<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn statefulset() -> StatefulSet {
    object("StatefulSet", "pinfleet")
}

fn deployment() -> Deployment {
    object("Deployment", "pinfleet-controller")
}

fn peer_container(sts: &StatefulSet) -> Container {
    let spec = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    container(&spec.containers, "pinfleet").clone()
}

fn controller_container(dep: &Deployment) -> Container {
    let spec = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    container(&spec.containers, "controller").clone()
}

#[test]
fn every_document_parses_as_its_kubernetes_type_without_unknown_fields() {
    let mut kinds = BTreeMap::<String, usize>::new();
    for doc in documents() {
        match doc.kind() {
            "Namespace" => drop(strict::<Namespace>(&doc)),
            "Secret" => drop(strict::<Secret>(&doc)),
            "Service" => drop(strict::<Service>(&doc)),
            "ServiceAccount" => drop(strict::<ServiceAccount>(&doc)),
            "Deployment" => drop(strict::<Deployment>(&doc)),
            "StatefulSet" => drop(strict::<StatefulSet>(&doc)),
            "PodDisruptionBudget" => drop(strict::<PodDisruptionBudget>(&doc)),
            "ClusterRole" => drop(strict::<ClusterRole>(&doc)),
            "ClusterRoleBinding" => drop(strict::<ClusterRoleBinding>(&doc)),
            "Role" => drop(strict::<Role>(&doc)),
            "RoleBinding" => drop(strict::<RoleBinding>(&doc)),
            "CustomResourceDefinition" => drop(strict::<CustomResourceDefinition>(&doc)),
            "PinSet" => {
                let ps: PinSet = serde_path_to_error::deserialize(&doc.value)
                    .unwrap_or_else(|e| panic!("{}: {} at {}", doc.at, e.inner(), e.path()));
                assert!(ps.metadata.name.is_some(), "{}", doc.at);
            }
            // The Prometheus operator's kind (manifests/monitoring/): its
            // shape and PromQL are checked in tests/it/monitoring.rs.
            "PrometheusRule" => assert!(doc.file.starts_with("monitoring/"), "{}", doc.at),
            other => panic!("{}: unexpected kind {other:?}", doc.at),
        }
        *kinds.entry(doc.kind().to_owned()).or_default() += 1;
    }
    // The Kubo component's patch is a second (partial) StatefulSet.
    let want: BTreeMap<String, usize> = [
        ("ClusterRole", 1),
        ("ClusterRoleBinding", 1),
        ("CustomResourceDefinition", 1),
        ("Deployment", 1),
        ("Namespace", 1),
        ("PinSet", 1),
        ("PodDisruptionBudget", 1),
        ("PrometheusRule", 1),
        ("Role", 1),
        ("RoleBinding", 1),
        ("Secret", 1),
        ("Service", 2),
        ("ServiceAccount", 1),
        ("StatefulSet", 2),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(kinds, want);
}

#[test]
fn the_strict_reading_reports_a_misspelt_field() {
    let doc = Doc {
        at: "inline".into(),
        file: "inline".into(),
        value: serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
            "spec": {"ports": [{"port": 1, "targetPrt": "api"}]}
        }),
    };
    let err = std::panic::catch_unwind(|| strict::<Service>(&doc)).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains(".spec.ports[0].targetPrt: unknown field"),
        "{msg}"
    );
}

/// `(api group, resource, verb)` of every rule, failing on wildcards and on
/// rules narrowed by name (the controller needs whole kinds).
fn grants(rules: &[PolicyRule], at: &str) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        let groups = r.api_groups.clone().unwrap_or_default();
        let resources = r.resources.clone().unwrap_or_default();
        for word in groups.iter().chain(&resources).chain(&r.verbs) {
            assert!(!word.contains('*'), "{at}: wildcard {word:?} in {r:?}");
        }
        assert!(r.resource_names.is_none(), "{at}: {r:?}");
        assert!(r.non_resource_urls.is_none(), "{at}: {r:?}");
        assert!(!groups.is_empty() && !resources.is_empty(), "{at}: {r:?}");
        for g in &groups {
            for res in &resources {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

fn expected(list: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    list.iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn rbac_grants_exactly_what_the_controller_needs_without_wildcards() {
    let cluster: ClusterRole = object("ClusterRole", "pinfleet-controller");
    let got = grants(cluster.rules.as_deref().unwrap(), "ClusterRole");
    let want = expected(&[
        (
            "pinfleet.io",
            "pinsets",
            &["get", "list", "watch", "patch", "update"],
        ),
        ("pinfleet.io", "pinsets/status", &["get", "patch", "update"]),
        ("pinfleet.io", "pinsets/finalizers", &["update"]),
        ("events.k8s.io", "events", &["create", "patch"]),
        ("", "events", &["create", "patch"]),
        ("", "configmaps", &["get", "list", "watch"]),
    ]);
    assert_eq!(got, want);
    assert!(cluster.aggregation_rule.is_none());

    let lease: Role = object("Role", "pinfleet-controller-lease");
    assert_eq!(lease.metadata.namespace.as_deref(), Some("pinfleet"));
    let got = grants(lease.rules.as_deref().unwrap(), "Role");
    let want = expected(&[(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    )]);
    assert_eq!(got, want);

    // Both are bound to the controller's ServiceAccount, which the
    // Deployment runs as; nothing else is bound.
    let sa: ServiceAccount = object("ServiceAccount", "pinfleet-controller");
    let sa_ns = sa.metadata.namespace.clone().unwrap();
    let crb: ClusterRoleBinding = object("ClusterRoleBinding", "pinfleet-controller");
    assert_eq!(crb.role_ref.kind, "ClusterRole");
    assert_eq!(crb.role_ref.name, "pinfleet-controller");
    let rb: RoleBinding = object("RoleBinding", "pinfleet-controller-lease");
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(rb.role_ref.name, "pinfleet-controller-lease");
    assert_eq!(rb.metadata.namespace.as_deref(), Some(sa_ns.as_str()));
    for subjects in [crb.subjects.unwrap(), rb.subjects.unwrap()] {
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "pinfleet-controller");
        assert_eq!(subjects[0].namespace.as_deref(), Some(sa_ns.as_str()));
    }
    let dep = deployment();
    let pod = dep.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("pinfleet-controller")
    );
    assert_eq!(dep.metadata.namespace.as_deref(), Some(sa_ns.as_str()));
    // The peers need no Kubernetes API at all.
    let peers = statefulset().spec.unwrap().template.spec.unwrap();
    assert_eq!(peers.automount_service_account_token, Some(false));
}

/// The container port a probe's port names.
fn probe_port(c: &Container, probe: &Probe) -> (String, i32) {
    let get = probe
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("{}: not an httpGet probe", c.name));
    let port = match &get.port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .as_ref()
                .unwrap()
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{}: no port named {name}", c.name))
                .container_port
        }
    };
    (get.path.clone().unwrap_or_default(), port)
}

/// The environment of `c` as pinfleet would see it: `$(VAR)` references
/// expanded, Secret values replaced by `secret(key)`.
fn env_of(env: &[EnvVar], secret: &dyn Fn(&str) -> String) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in env {
        let value = match (&e.value, &e.value_from) {
            (Some(v), None) => {
                let mut v = v.clone();
                for (name, value) in &out {
                    v = v.replace(&format!("$({name})"), value);
                }
                v
            }
            (None, Some(from)) => {
                if let Some(r) = &from.secret_key_ref {
                    assert_eq!(r.name, "pinfleet", "{}", e.name);
                    secret(&r.key)
                } else if let Some(f) = &from.field_ref {
                    assert_eq!(f.field_path, "metadata.name", "{}", e.name);
                    "pinfleet-0".to_owned()
                } else {
                    panic!("{}: unexpected valueFrom", e.name)
                }
            }
            _ => panic!("{}: neither value nor valueFrom", e.name),
        };
        assert!(!value.contains("$("), "{}: unexpanded {value}", e.name);
        out.push((e.name.clone(), value));
    }
    out
}

/// A valid stand-in for each key of the `pinfleet` Secret.
fn stand_in(key: &str) -> String {
    match key {
        "cluster-secret" => ClusterSecret::random().to_hex(),
        // As the Secret writes it: `;`-terminated, so that the hash's
        // commas do not split the one user.
        "api-users" => format!(
            "controller=admin:{};",
            pinfleet::auth::hash_password("stand-in").unwrap()
        ),
        "controller-basic-auth" => "controller:stand-in".to_owned(),
        other => panic!("unknown Secret key {other}"),
    }
}

/// The peers' config: no service.toml keys but those `pinfleet init`
/// writes, then the container's `PINFLEET_*` overrides.
fn peer_config(env: &[(String, String)]) -> ServiceConfig {
    let dir = tempfile::tempdir().unwrap();
    pinfleet::config::init(dir.path(), false, None, Some("pinfleet-0")).unwrap();
    let path = dir.path().join("service.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    ServiceConfig::from_toml_str(&text, &path, env)
        .unwrap_or_else(|e| panic!("the peers' environment does not load: {e}"))
}

#[test]
fn peer_probes_hit_get_health_on_the_api_port_and_the_services_reach_it() {
    let sts = statefulset();
    let c = peer_container(&sts);
    let cfg = peer_config(&env_of(c.env.as_deref().unwrap(), &stand_in));
    let api_port = i32::from(cfg.api.listen.port());
    assert_eq!(api_port, 9094);
    assert!(cfg.api.listen.ip().is_unspecified(), "{}", cfg.api.listen);
    for probe in [&c.readiness_probe, &c.liveness_probe] {
        let probe = probe.as_ref().expect("readiness and liveness probes");
        assert_eq!(probe_port(&c, probe), ("/health".to_owned(), api_port));
    }

    // Both Services select the peers and send their api port to it.
    let pod_labels = sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let named = |name: &str| -> i32 {
        c.ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no container port {name}"))
            .container_port
    };
    for name in ["pinfleet-api", "pinfleet-peers"] {
        let svc: Service = object("Service", name);
        let spec = svc.spec.unwrap();
        let selector = spec.selector.unwrap();
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{name} selects {selector:?}"
        );
        let api = spec
            .ports
            .unwrap()
            .into_iter()
            .find(|p| p.name.as_deref() == Some("api"))
            .unwrap();
        assert_eq!(api.port, api_port, "{name}");
        let target = match api.target_port.unwrap() {
            IntOrString::Int(n) => n,
            IntOrString::String(s) => named(&s),
        };
        assert_eq!(target, api_port, "{name}");
    }

    // The cluster's p2p and the embedded IPFS swarm listen on the ports the
    // headless Service publishes.
    let headless: Service = object("Service", "pinfleet-peers");
    let hspec = headless.spec.unwrap();
    assert_eq!(hspec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(hspec.publish_not_ready_addresses, Some(true));
    assert_eq!(
        sts.spec.as_ref().unwrap().service_name.as_deref(),
        Some("pinfleet-peers")
    );
    let published: BTreeSet<i32> = hspec.ports.unwrap().iter().map(|p| p.port).collect();
    let p2p = cfg.cluster.listen_multiaddress[0].to_string();
    let swarm = cfg.ipfs.embedded_listen[0].to_string();
    assert_eq!(p2p, format!("/ip4/0.0.0.0/tcp/{}", named("cluster")));
    assert_eq!(swarm, format!("/ip4/0.0.0.0/tcp/{}", named("ipfs")));
    assert!(published.contains(&named("cluster")) && published.contains(&named("ipfs")));
    // The StatefulSet's script dials peer 0 on the p2p port.
    let script = c.command.as_ref().unwrap().join("\n");
    assert!(
        script.contains(&format!("/tcp/{}\"", named("cluster"))),
        "{script}"
    );
}

#[test]
fn the_controller_reaches_the_api_service_by_a_name_the_peers_accept() {
    let c = controller_container(&deployment());
    let env: BTreeMap<String, String> = env_of(c.env.as_deref().unwrap(), &stand_in)
        .into_iter()
        .collect();
    let host = &env["PINFLEET_HOST"];
    let url = reqwest::Url::parse(host).unwrap();
    let svc: Service = object("Service", "pinfleet-api");
    let ns = svc.metadata.namespace.clone().unwrap();
    assert_eq!(
        url.host_str(),
        Some(format!("pinfleet-api.{ns}.svc").as_str())
    );
    assert_eq!(url.port(), Some(9094));
    assert!(env.contains_key("PINFLEET_BASIC_AUTH"));
    // The peers accept that name in the Host header (api.public_names).
    let peer = peer_container(&statefulset());
    let cfg = peer_config(&env_of(peer.env.as_deref().unwrap(), &stand_in));
    assert!(
        cfg.api
            .public_names
            .iter()
            .any(|n| Some(n.as_str()) == url.host_str()),
        "{:?}",
        cfg.api.public_names
    );
    // The Secret gives the controller's user the role it needs (conditions
    // and forced prunes are admin writes), and the controller that user.
    let secret: Secret = object("Secret", "pinfleet");
    let data = secret.string_data.unwrap();
    assert!(data["api-users"].starts_with("controller=admin:"));
    assert!(data["controller-basic-auth"].starts_with("controller:"));
}

#[test]
fn the_peers_environment_loads_as_a_pinfleet_config_with_the_embedded_node() {
    let c = peer_container(&statefulset());
    let env = env_of(c.env.as_deref().unwrap(), &stand_in);
    let cfg = peer_config(&env);
    assert_eq!(cfg.ipfs.backend, IpfsBackendKind::Embedded);
    assert_eq!(cfg.cluster.peername, "pinfleet-0");
    assert!(!cfg.api.basic_auth_credentials.is_empty());
    // Every PINFLEET_ variable is a config key, except the one `pinfleet
    // init` reads (checked against its help below).
    let keys = config_env_names();
    for (name, _) in &env {
        if name.starts_with("PINFLEET_") && name != "PINFLEET_SECRET" {
            assert!(keys.contains(name), "{name} is not a config key");
        }
    }
    // Both secret variables read the same Secret key.
    let from = |n: &str| {
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == n)
            .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .map(|r| r.key.clone())
    };
    assert_eq!(from("PINFLEET_SECRET"), from("PINFLEET_CLUSTER_SECRET"));
}

/// `PINFLEET_<SECTION>_<KEY>` of every key `pinfleet init` writes (all of
/// them, each with its default).
fn config_env_names() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    pinfleet::config::init(dir.path(), false, None, None).unwrap();
    let text = std::fs::read_to_string(dir.path().join("service.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let mut out = BTreeSet::new();
    for (section, keys) in &table {
        for key in keys.as_table().unwrap().keys() {
            out.insert(pinfleet::config::env_var_name(section, key));
        }
    }
    assert!(out.contains("PINFLEET_API_LISTEN"), "{out:?}");
    out
}

#[test]
fn the_kubo_component_switches_the_peers_to_the_kubo_sidecar() {
    let docs = documents();
    let patch = docs
        .iter()
        .find(|d| d.file.starts_with("kubo/") && d.kind() == "StatefulSet")
        .unwrap();
    let patch: StatefulSet = strict(patch);
    let base = statefulset();
    assert_eq!(patch.metadata.name, base.metadata.name);
    assert_eq!(patch.metadata.namespace, base.metadata.namespace);
    let containers = patch.spec.unwrap().template.spec.unwrap().containers;
    // A strategic merge: env entries replace the base's of the same name.
    let mut env = peer_container(&base).env.unwrap();
    for e in container(&containers, "pinfleet").env.clone().unwrap() {
        match env.iter_mut().find(|b| b.name == e.name) {
            Some(b) => *b = e,
            None => env.push(e),
        }
    }
    let cfg = peer_config(&env_of(&env, &stand_in));
    assert_eq!(cfg.ipfs.backend, IpfsBackendKind::Kubo);
    assert_eq!(cfg.ipfs.kubo_url, "http://127.0.0.1:5001");
    let kubo = container(&containers, "kubo");
    let mount = &kubo.volume_mounts.as_ref().unwrap()[0];
    let claims = statefulset().spec.unwrap().volume_claim_templates.unwrap();
    assert_eq!(
        claims[0].metadata.name.as_deref(),
        Some(mount.name.as_str())
    );
    assert_eq!(mount.sub_path.as_deref(), Some("kubo"));
}

#[test]
fn pods_run_as_non_root_with_a_read_only_root_and_bounded_memory() {
    let sts = statefulset();
    let dep = deployment();
    let pods = [
        ("StatefulSet", sts.spec.unwrap().template.spec.unwrap()),
        ("Deployment", dep.spec.unwrap().template.spec.unwrap()),
    ];
    for (what, pod) in pods {
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true), "{what}");
        assert!(psc.run_as_user.is_some_and(|u| u > 0), "{what}");
        for c in &pod.containers {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}");
            let drop = sc.capabilities.as_ref().unwrap().drop.clone().unwrap();
            assert_eq!(drop, ["ALL"], "{what}");
            let res = c.resources.as_ref().unwrap();
            assert!(res.requests.as_ref().unwrap().contains_key("memory"));
            assert!(res.limits.as_ref().unwrap().contains_key("memory"));
            assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
        }
    }
}

#[test]
fn three_peers_keep_their_state_on_volumes_and_a_majority_through_disruptions() {
    let sts = statefulset();
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let claims = spec.volume_claim_templates.as_ref().unwrap();
    let c = peer_container(&sts);
    let mounts = c.volume_mounts.as_ref().unwrap();
    let data = mounts
        .iter()
        .find(|m| Some(m.name.as_str()) == claims[0].metadata.name.as_deref())
        .expect("the claim is mounted");
    // The peer directory is on that volume.
    let script = c.command.as_ref().unwrap().join("\n");
    assert!(
        script.contains(&format!("dir={}/", data.mount_path)),
        "{script}"
    );
    let pdb: PodDisruptionBudget = object("PodDisruptionBudget", "pinfleet");
    let pspec = pdb.spec.unwrap();
    assert_eq!(pspec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(
        pspec.selector.unwrap().match_labels,
        spec.selector.match_labels
    );
    assert_eq!(
        deployment().spec.unwrap().replicas,
        Some(1),
        "one controller by default"
    );
}

/// Runs a command to its end within [`PROCESS_DEADLINE`]: (exit code,
/// stdout, stderr).
fn run(program: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let child = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PROCESS_DEADLINE) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{program} {args:?} did not finish within {PROCESS_DEADLINE:?}");
        }
    }
}

fn help(sub: &str) -> String {
    let (code, out, err) = run(env!("CARGO_BIN_EXE_pinfleet"), &[sub, "--help"]);
    assert_eq!(code, Some(0), "pinfleet {sub} --help: {err}");
    out
}

/// `(subcommand, flags)` of every `pinfleet SUB --flag …` in a shell script.
fn invocations(script: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "pinfleet") {
            let flags = words[i + 2..]
                .iter()
                .filter(|w| w.starts_with("--"))
                .map(|w| w.to_string())
                .collect();
            out.push((words[i + 1].to_owned(), flags));
        }
    }
    out
}

#[test]
fn every_command_flag_and_variable_used_is_one_pinfleet_has() {
    let peer = peer_container(&statefulset());
    let script = peer.command.as_ref().unwrap()[2].clone();
    let mut calls = invocations(&script);
    let subs: BTreeSet<&str> = calls.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(subs, BTreeSet::from(["daemon", "init"]), "{script}");

    let controller = controller_container(&deployment());
    let args = controller.args.clone().unwrap();
    calls.push((
        args[0].clone(),
        args.iter()
            .filter(|a| a.starts_with("--"))
            .cloned()
            .collect(),
    ));
    let probe = controller
        .readiness_probe
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap()
        .command
        .clone()
        .unwrap();
    assert_eq!(probe[0], "pinfleet");
    calls.push((
        probe[1].clone(),
        probe
            .iter()
            .filter(|a| a.starts_with("--"))
            .cloned()
            .collect(),
    ));
    assert_eq!(args[0], "controller");
    assert_eq!(args[1..3], ["--source", "kube"]);

    let mut helps = BTreeMap::new();
    for (sub, flags) in &calls {
        let text = helps.entry(sub.clone()).or_insert_with(|| help(sub));
        for flag in flags {
            let needle = format!("{flag} ");
            let needle_eq = format!("{flag}=");
            let needle_comma = format!("{flag},");
            assert!(
                text.contains(&needle) || text.contains(&needle_eq) || text.contains(&needle_comma),
                "pinfleet {sub} has no {flag}:\n{text}"
            );
        }
    }
    // The variables that are not config keys are documented by the command
    // that reads them.
    assert!(helps["init"].contains("PINFLEET_SECRET"));
    for var in ["PINFLEET_HOST", "PINFLEET_BASIC_AUTH"] {
        assert!(
            controller
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.name == var)
        );
        assert!(helps["controller"].contains(var), "{var}");
    }
}

/// The Deployment's exact argument list is one the controller accepts for
/// the kube source: run with it (and no Kubernetes credentials), it gets
/// as far as building its Kubernetes client, past every argument check.
#[test]
fn the_controller_deployment_args_start_the_kube_controller() {
    let args = controller_container(&deployment()).args.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pinfleet"))
        .args(&args)
        .env("PINFLEET_HOST", "http://127.0.0.1:9")
        .env("KUBECONFIG", dir.path().join("none"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("PINFLEET_BASIC_AUTH")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot build a kubernetes client"),
        "pinfleet {}: {err}",
        args.join(" ")
    );
}

/// `resources`, `components` and patch paths of a kustomization.
fn listed(k: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for field in ["resources", "components"] {
        for r in k[field].as_array().into_iter().flatten() {
            out.push(r.as_str().unwrap().to_owned());
        }
    }
    for p in k["patches"].as_array().into_iter().flatten() {
        out.push(p["path"].as_str().unwrap().to_owned());
    }
    // Generated ConfigMaps' files, `KEY=PATH` or `PATH`.
    for g in k["configMapGenerator"].as_array().into_iter().flatten() {
        for f in g["files"].as_array().into_iter().flatten() {
            let f = f.as_str().unwrap();
            out.push(f.split_once('=').map_or(f, |(_, p)| p).to_owned());
        }
    }
    out
}

#[test]
fn every_file_is_listed_in_its_directorys_kustomization() {
    let root = manifests_dir();
    let mut dirs = BTreeSet::from([root.clone()]);
    for f in yaml_files(&root) {
        dirs.insert(f.parent().unwrap().to_path_buf());
    }
    for dir in dirs {
        let kfile = dir.join("kustomization.yaml");
        assert!(
            kfile.exists(),
            "{} has no kustomization.yaml",
            dir.display()
        );
        let k: Value = serde_saphyr::from_str(&std::fs::read_to_string(&kfile).unwrap()).unwrap();
        let names = listed(&k);
        for n in &names {
            assert!(
                !n.contains("..") && !n.starts_with('/'),
                "{}: {n} leaves its directory (kustomize refuses it)",
                rel(&kfile)
            );
            assert!(dir.join(n).exists(), "{}: {n} does not exist", rel(&kfile));
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for f in entries {
            let name = f.file_name().unwrap().to_str().unwrap().to_owned();
            if f.is_dir() || is_kustomization(&f) {
                continue;
            }
            assert!(
                names.contains(&name),
                "{} is not listed in {}",
                rel(&f),
                rel(&kfile)
            );
        }
    }
    // The default deployment is the cluster, the controller and the CRD; the
    // example PinSet (whose kind the CRD only then defines) and the Kubo
    // variant are applied on their own.
    let top: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root.join("kustomization.yaml")).unwrap())
            .unwrap();
    let names = listed(&top);
    assert!(names.contains(&"crd.yaml".to_owned()), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("examples") || n.starts_with("kubo")),
        "{names:?}"
    );
}

#[test]
fn the_crd_copy_is_what_pinfleet_crd_prints() {
    let copy = std::fs::read_to_string(manifests_dir().join("crd.yaml")).unwrap();
    assert!(
        copy == crd_yaml().unwrap(),
        "manifests/crd.yaml is stale: run `cargo run -- crd > manifests/crd.yaml`"
    );
    let (code, out, err) = run(env!("CARGO_BIN_EXE_pinfleet"), &["crd"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        copy == out,
        "manifests/crd.yaml differs from `pinfleet crd`"
    );
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/pinset.yaml"))
            .unwrap();
    assert!(copy == committed, "manifests/crd.yaml differs from crds/");
}

#[test]
fn the_example_pinset_passes_pinfleets_own_validation() {
    let file = manifests_dir().join("examples/pinset.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let sets = load_str(&file, &text, &Limits::default())
        .unwrap_or_else(|d| panic!("manifests/examples/pinset.yaml: {d}"));
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].id.to_string(), "default/well-known");
    assert!(sets[0].pins.len() >= 2, "a couple of CIDs");
    // The same object is a PinSet custom resource, with its namespace set.
    let ps: PinSet = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(ps.metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn the_secrets_placeholders_refuse_to_start_a_peer() {
    let secret: Secret = object("Secret", "pinfleet");
    let data = secret.string_data.unwrap();
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["api-users", "cluster-secret", "controller-basic-auth"])
    );
    // Every key a pod reads exists in it.
    for c in [
        peer_container(&statefulset()),
        controller_container(&deployment()),
    ] {
        for e in c.env.unwrap() {
            if let Some(r) = e.value_from.and_then(|v| v.secret_key_ref) {
                assert!(keys.contains(r.key.as_str()), "{}: {}", c.name, r.key);
            }
        }
    }
    // Left as shipped, neither the secret nor the users load: a peer fails
    // at once instead of running with a known key.
    assert!(ClusterSecret::parse_hex(&data["cluster-secret"]).is_err());
    let c = peer_container(&statefulset());
    let env = env_of(c.env.as_deref().unwrap(), &|k| match k {
        "api-users" => data["api-users"].clone(),
        other => stand_in(other),
    });
    let dir = tempfile::tempdir().unwrap();
    pinfleet::config::init(dir.path(), false, None, None).unwrap();
    let path = dir.path().join("service.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let err = ServiceConfig::from_toml_str(&text, &path, &env).unwrap_err();
    assert!(
        err.to_string()
            .contains("PINFLEET_API_BASIC_AUTH_CREDENTIALS"),
        "{err}"
    );
}

#[test]
fn kubectl_kustomize_builds_every_kustomization_offline() {
    if run_probe("kubectl").is_none() {
        eprintln!("kubectl is not installed: skipped (the other tests read the files)");
        return;
    }
    let docs = documents();
    let count = |dir: &str| {
        docs.iter()
            .filter(|d| {
                let in_dir = match d.file.rsplit_once('/') {
                    Some((parent, _)) => parent == dir,
                    None => dir.is_empty(),
                };
                in_dir && !d.file.starts_with("kubo/")
            })
            .count()
    };
    for (dir, want) in [("", count("")), ("examples", count("examples"))] {
        let path = manifests_dir().join(dir);
        let (code, out, err) = run("kubectl", &["kustomize", path.to_str().unwrap()]);
        assert_eq!(code, Some(0), "kubectl kustomize manifests/{dir}: {err}");
        let built: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
        assert_eq!(built.len(), want, "manifests/{dir}");
    }
    // The Kubo component on top of the default deployment.
    // (kustomize takes relative paths only)
    let overlay = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let up = relative(overlay.path(), &manifests_dir());
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{0}]\ncomponents: [{0}/kubo]\n",
            up.display()
        ),
    )
    .unwrap();
    let (code, out, err) = run(
        "kubectl",
        &[
            "kustomize",
            "--load-restrictor",
            "LoadRestrictionsNone",
            overlay.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "kustomize with the kubo component: {err}");
    let built: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    let sts = built.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let containers = sts["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2);
    let env = containers[0]["env"].as_array().unwrap();
    let backend: Vec<&Value> = env
        .iter()
        .filter(|e| e["name"] == "PINFLEET_IPFS_BACKEND")
        .collect();
    assert_eq!(backend.len(), 1);
    assert_eq!(backend[0]["value"], "kubo");
}

/// `to` as a path relative to `from` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to) = (from.canonicalize().unwrap(), to.canonicalize().unwrap());
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// `Some(())` when `program` runs (`program version --client` exits).
fn run_probe(program: &str) -> Option<()> {
    Command::new(program)
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .map(|_| ())
}
