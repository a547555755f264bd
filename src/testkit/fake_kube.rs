//! An in-process fake Kubernetes API server for `pinsets.pinfleet.io/v1alpha1`
//! (namespaced), on 127.0.0.1:0: list (with a resourceVersion), watch
//! (newline-delimited events from a resourceVersion, bookmarks, timeout),
//! create, get, merge patch (with a resourceVersion precondition), apply
//! patch of `/status` (merged), delete with finalizers (deletionTimestamp
//! first, gone once the finalizers are empty). [`FakeKube::expire_watches`]
//! ends every watch with `410 Gone` and makes older resourceVersions stale,
//! as an API server whose watch cache moved on. Leases
//! (`coordination.k8s.io/v1`): get, create, replace with a
//! resourceVersion precondition (`409 Conflict`). Events
//! (`events.k8s.io/v1`): create, merge patch (a series), kept in order.
//! ConfigMaps (`v1`): list, watch and get like PinSets, written by the test
//! itself ([`FakeKube::put_config_map`], [`FakeKube::delete_config_map`]).
//!
//! For tests and benchmarks only (the `testkit` feature); it owns the
//! server and its store, and must not be used by the product. It is not a
//! real API server: no authentication, no admission, no field selectors.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "/apis/pinfleet.io/v1alpha1";
/// The resources that are listed and watched.
const PINSETS: &str = "pinsets";
const CONFIGMAPS: &str = "configmaps";

/// `(apiVersion, kind)` of a resource's objects.
fn type_of(resource: &str) -> (&'static str, &'static str) {
    if resource == CONFIGMAPS {
        ("v1", "ConfigMap")
    } else {
        ("pinfleet.io/v1alpha1", "PinSet")
    }
}

/// `(resource, namespace, name)`.
type Key = (&'static str, String, String);
/// Changes kept for watches that start from an older resourceVersion; a
/// watch from before them is `410 Gone`.
const LOG_KEEP: usize = 4096;

#[derive(Clone, Debug)]
enum Ev {
    /// `rv`, resource, type, object.
    Change(u64, &'static str, &'static str, Arc<Value>),
    Bookmark(u64),
    Expire,
}

#[derive(Default)]
struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    /// The last [`LOG_KEEP`] changes (`rv`, resource, type, object), oldest
    /// first (older ones are compacted away, as etcd does).
    log: std::collections::VecDeque<(u64, &'static str, &'static str, Arc<Value>)>,
    /// Watches from a resourceVersion below this are `410 Gone`.
    gone_before: u64,
    /// Every status written, per `ns/name`, in order.
    statuses: HashMap<String, Vec<Value>>,
    lists: usize,
    watches: usize,
    /// The namespace of every ConfigMap list or watch (`None`: all).
    config_map_scopes: Vec<Option<String>>,
    leases: BTreeMap<(String, String), Value>,
    lease_reads: usize,
    events: Vec<Value>,
}

/// A running fake API server; dropping it stops the server.
pub struct FakeKube {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    client: kube::Client,
    store: Arc<Mutex<Store>>,
    tx: broadcast::Sender<Ev>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKube").field("url", &self.url).finish()
    }
}

/// The store, also after a panic in another handler (a test's failure is
/// reported where it happened).
fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    tx: broadcast::Sender<Ev>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let Some(t) = target.as_object_mut() else {
                return;
            };
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Store {
    /// Records a change: bumps the resourceVersion, stamps the object,
    /// logs and broadcasts the event.
    fn change(&mut self, tx: &broadcast::Sender<Ev>, kind: &'static str, obj: Value) -> Value {
        self.change_of(tx, PINSETS, kind, obj)
    }

    fn change_of(
        &mut self,
        tx: &broadcast::Sender<Ev>,
        res: &'static str,
        kind: &'static str,
        mut obj: Value,
    ) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = (
            res,
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        if kind == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, obj.clone());
        }
        let shared = Arc::new(obj.clone());
        self.log
            .push_back((self.rv, res, kind, Arc::clone(&shared)));
        while self.log.len() > LOG_KEEP {
            if let Some((rv, _, _, _)) = self.log.pop_front() {
                self.gone_before = self.gone_before.max(rv);
            }
        }
        let _ = tx.send(Ev::Change(self.rv, res, kind, shared));
        obj
    }
}

impl FakeKube {
    /// Starts a server on 127.0.0.1 with no objects.
    pub async fn start() -> std::io::Result<FakeKube> {
        let store = Arc::new(Mutex::new(Store::default()));
        let (tx, _) = broadcast::channel(4096);
        let shared = Shared {
            store: Arc::clone(&store),
            tx: tx.clone(),
        };
        let app = Router::new()
            .route(&format!("{PREFIX}/pinsets"), get(list_all))
            .route(
                &format!("{PREFIX}/namespaces/{{ns}}/pinsets"),
                get(list_ns).post(create),
            )
            .route(
                &format!("{PREFIX}/namespaces/{{ns}}/pinsets/{{name}}"),
                get(get_one).patch(patch_one).delete(delete_one),
            )
            .route(
                &format!("{PREFIX}/namespaces/{{ns}}/pinsets/{{name}}/status"),
                patch(patch_status),
            )
            .route("/api/v1/configmaps", get(list_all_config_maps))
            .route(
                "/api/v1/namespaces/{ns}/configmaps",
                get(list_ns_config_maps),
            )
            .route(
                "/api/v1/namespaces/{ns}/configmaps/{name}",
                get(get_config_map),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                axum::routing::post(create_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease).put(replace_lease),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                axum::routing::post(create_event),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                patch(patch_event),
            )
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let uri: axum::http::Uri = url.parse().map_err(std::io::Error::other)?;
        // The kube client's TLS stack needs a process-wide crypto
        // provider even for plain http; a test process has no `main`.
        crate::tls::install_crypto_provider();
        let client =
            kube::Client::try_from(kube::Config::new(uri)).map_err(std::io::Error::other)?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            // Serving ends only when the listener fails or on cancel.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        // Bookmarks go through the event channel, so one never passes an
        // event that a stream has not delivered yet.
        let (s, t, stop) = (Arc::clone(&store), tx.clone(), cancel.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        let st = lock(&s);
                        let _ = t.send(Ev::Bookmark(st.rv));
                    }
                }
            }
        });
        Ok(FakeKube {
            url,
            client,
            store,
            tx,
            cancel,
        })
    }

    /// A kube client of this server (no authentication).
    /// A kubeconfig (YAML) whose one context points at this server with
    /// no credentials, for `KUBECONFIG` of a process under test.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n\
             current-context: fake\nusers:\n- name: nobody\n  user: {{}}\n",
            self.url
        )
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Creates the PinSet `obj` in namespace `ns` as a `POST` would (uid,
    /// generation 1, creationTimestamp, no status) and returns it; `None`
    /// when it already exists. Faster than a request, for bulk setups.
    pub fn create(&self, ns: &str, obj: Value) -> Option<Value> {
        let mut st = lock(&self.store);
        create_in(&mut st, &self.tx, ns, obj)
    }

    /// How many stored PinSets satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        let st = lock(&self.store);
        st.objects
            .iter()
            .filter(|(k, o)| k.0 == PINSETS && pred(o))
            .count()
    }

    /// The object `ns/name`, as stored.
    pub fn object(&self, ns: &str, name: &str) -> Option<Value> {
        let st = lock(&self.store);
        st.objects.get(&(PINSETS, ns.into(), name.into())).cloned()
    }

    /// Creates or replaces ConfigMap `ns/name` holding `data` (a watch
    /// sees ADDED or MODIFIED).
    pub fn put_config_map(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let mut st = lock(&self.store);
        let key = (CONFIGMAPS, ns.to_string(), name.to_string());
        let old = st.objects.get(&key).cloned();
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name, "namespace": ns,
                "uid": old.as_ref().map_or_else(|| format!("cm-{ns}-{name}"), |o| o["metadata"]["uid"].as_str().unwrap_or_default().to_string()),
                "creationTimestamp": now(),
            },
            "data": data,
        });
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        st.change_of(&self.tx, CONFIGMAPS, kind, obj);
    }

    /// Creates or replaces ConfigMap `ns/name` without telling open
    /// watches (as if the event were lost): only a read finds it.
    pub fn put_config_map_unwatched(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let mut st = lock(&self.store);
        st.rv += 1;
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name, "namespace": ns, "uid": format!("cm-{ns}-{name}"),
                "resourceVersion": st.rv.to_string(), "creationTimestamp": now(),
            },
            "data": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        st.objects
            .insert((CONFIGMAPS, ns.to_string(), name.to_string()), obj);
    }

    /// The namespace of every ConfigMap list and watch served (`None`:
    /// every namespace).
    pub fn config_map_scopes(&self) -> Vec<Option<String>> {
        lock(&self.store).config_map_scopes.clone()
    }

    /// Deletes ConfigMap `ns/name` (a watch sees DELETED).
    pub fn delete_config_map(&self, ns: &str, name: &str) {
        let mut st = lock(&self.store);
        let key = (CONFIGMAPS, ns.to_string(), name.to_string());
        if let Some(obj) = st.objects.get(&key).cloned() {
            st.change_of(&self.tx, CONFIGMAPS, "DELETED", obj);
        }
    }

    /// Every status written to `ns/name`, oldest first.
    pub fn statuses(&self, ns: &str, name: &str) -> Vec<Value> {
        let st = lock(&self.store);
        st.statuses
            .get(&format!("{ns}/{name}"))
            .cloned()
            .unwrap_or_default()
    }

    /// How many lists and watches were served.
    pub fn requests(&self) -> (usize, usize) {
        let st = lock(&self.store);
        (st.lists, st.watches)
    }

    /// `(type, reason, note)` of every Event about PinSet `ns/name`, oldest
    /// first.
    pub fn events(&self, ns: &str, name: &str) -> Vec<(String, String, String)> {
        let st = lock(&self.store);
        st.events
            .iter()
            .filter(|e| {
                e["regarding"]["namespace"] == ns
                    && e["regarding"]["name"] == name
                    && e["regarding"]["kind"] == "PinSet"
            })
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("type"), s("reason"), s("note"))
            })
            .collect()
    }

    /// The Lease `ns/name`, as stored.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        let st = lock(&self.store);
        st.leases.get(&(ns.into(), name.into())).cloned()
    }

    /// How many times a Lease was read.
    pub fn lease_reads(&self) -> usize {
        lock(&self.store).lease_reads
    }

    /// Gives the Lease `ns/name` to `holder`, renewed now (another
    /// replica's write); nothing when there is no such Lease.
    pub fn renew_lease_as(&self, ns: &str, name: &str, holder: &str) {
        let mut st = lock(&self.store);
        st.rv += 1;
        let rv = st.rv.to_string();
        let Some(lease) = st.leases.get_mut(&(ns.into(), name.into())) else {
            return;
        };
        lease["spec"]["holderIdentity"] = json!(holder);
        lease["spec"]["renewTime"] =
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        lease["metadata"]["resourceVersion"] = json!(rv);
    }

    /// Ends every open watch with `410 Gone` and makes every
    /// resourceVersion older than the current one stale.
    pub fn expire_watches(&self) {
        let mut st = lock(&self.store);
        st.gone_before = st.rv;
        let _ = self.tx.send(Ev::Expire);
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    watch: Option<String>,
    resource_version: Option<String>,
    allow_watch_bookmarks: Option<bool>,
    timeout_seconds: Option<u64>,
}

async fn list_all(State(s): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    list_or_watch(s, PINSETS, None, q)
}

async fn list_ns(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    list_or_watch(s, PINSETS, Some(ns), q)
}

async fn list_all_config_maps(State(s): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    list_or_watch(s, CONFIGMAPS, None, q)
}

async fn list_ns_config_maps(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    list_or_watch(s, CONFIGMAPS, Some(ns), q)
}

async fn get_config_map(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let st = lock(&s.store);
    match st.objects.get(&(CONFIGMAPS, ns, name)) {
        Some(o) => axum::Json(o.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
    }
}

fn in_ns(obj: &Value, ns: &Option<String>) -> bool {
    ns.as_ref()
        .is_none_or(|ns| obj["metadata"]["namespace"] == ns.as_str())
}

fn line(kind: &str, object: &Value) -> Bytes {
    // A Value always serializes (its map keys are strings).
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn gone() -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version", "reason": "Expired", "code": 410,
    })
}

fn list_or_watch(s: Shared, res: &'static str, ns: Option<String>, q: ListQuery) -> Response {
    let watching = q.watch.as_deref().is_some_and(|w| w == "true" || w == "1");
    let (api_version, kind) = type_of(res);
    let mut st = lock(&s.store);
    if res == CONFIGMAPS {
        st.config_map_scopes.push(ns.clone());
    }
    if !watching {
        if res == PINSETS {
            st.lists += 1;
        }
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|(k, o)| k.0 == res && in_ns(o, &ns))
            .map(|(_, o)| o.clone())
            .collect();
        let body = json!({
            "apiVersion": api_version, "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        });
        return axum::Json(body).into_response();
    }
    if res == PINSETS {
        st.watches += 1;
    }
    let since: u64 = q
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(st.rv);
    if since < st.gone_before {
        let body = Body::from(line("ERROR", &gone()));
        return Response::new(body);
    }
    let replay: Vec<Bytes> = st
        .log
        .iter()
        .filter(|(rv, r, _, o)| *rv > since && *r == res && in_ns(o, &ns))
        .map(|(_, _, k, o)| line(k, o))
        .collect();
    let rx = s.tx.subscribe();
    drop(st);
    let bookmarks = q.allow_watch_bookmarks.unwrap_or(false);
    let live = futures::stream::unfold((rx, false), move |(mut rx, done)| {
        let ns = ns.clone();
        async move {
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(Ev::Change(rv, r, kind, obj))
                        if rv > since && r == res && in_ns(&obj, &ns) =>
                    {
                        return Some((line(kind, &obj), (rx, false)));
                    }
                    Ok(Ev::Bookmark(rv)) if bookmarks && rv > since => {
                        let mark = json!({
                            "apiVersion": api_version, "kind": kind,
                            "metadata": {"resourceVersion": rv.to_string()},
                        });
                        return Some((line("BOOKMARK", &mark), (rx, false)));
                    }
                    Ok(Ev::Expire) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some((line("ERROR", &gone()), (rx, true)));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or(290));
    let stream = futures::stream::iter(replay)
        .chain(live)
        .take_until(tokio::time::sleep(timeout))
        .map(Ok::<_, std::convert::Infallible>);
    Response::new(Body::from_stream(stream))
}

async fn create(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    axum::Json(obj): axum::Json<Value>,
) -> Response {
    let mut st = lock(&s.store);
    match create_in(&mut st, &s.tx, &ns, obj) {
        Some(out) => (StatusCode::CREATED, axum::Json(out)).into_response(),
        None => status(StatusCode::CONFLICT, "AlreadyExists", "already exists"),
    }
}

fn create_in(
    st: &mut Store,
    tx: &broadcast::Sender<Ev>,
    ns: &str,
    mut obj: Value,
) -> Option<Value> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if st.objects.contains_key(&(PINSETS, ns.to_string(), name)) {
        return None;
    }
    st.uid += 1;
    let meta = &mut obj["metadata"];
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(format!("uid-{}", st.uid));
    meta["generation"] = json!(1);
    meta["creationTimestamp"] = json!(now());
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    Some(st.change(tx, "ADDED", obj))
}

async fn get_one(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let st = lock(&s.store);
    match st.objects.get(&(PINSETS, ns, name)) {
        Some(o) => axum::Json(o.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
    }
}

async fn patch_one(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if kind != "application/merge-patch+json" && kind != "application/apply-patch+yaml" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            kind,
        );
    }
    let Ok(mut p) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not json");
    };
    let mut st = lock(&s.store);
    let Some(old) = st.objects.get(&(PINSETS, ns, name)).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    if let Some(rv) = p["metadata"]["resourceVersion"].as_str()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified",
        );
    }
    if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "generation", "uid", "namespace", "name"] {
            m.remove(k);
        }
    }
    if let Some(o) = p.as_object_mut() {
        o.remove("status");
    }
    let mut new = old.clone();
    merge(&mut new, &p);
    if new == old {
        return axum::Json(old).into_response();
    }
    if new["spec"] != old["spec"] {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    let finalized = new["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty());
    let kind = if new["metadata"]["deletionTimestamp"].is_string() && finalized {
        "DELETED"
    } else {
        "MODIFIED"
    };
    let out = st.change(&s.tx, kind, new);
    axum::Json(out).into_response()
}

async fn patch_status(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if kind != "application/apply-patch+yaml" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            kind,
        );
    }
    let Ok(p) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not json");
    };
    let mut st = lock(&s.store);
    let key = format!("{ns}/{name}");
    let Some(old) = st.objects.get(&(PINSETS, ns, name)).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    let mut new = old.clone();
    merge(&mut new["status"], &p["status"]);
    st.statuses
        .entry(key)
        .or_default()
        .push(new["status"].clone());
    if new == old {
        return axum::Json(old).into_response();
    }
    let out = st.change(&s.tx, "MODIFIED", new);
    axum::Json(out).into_response()
}

async fn delete_one(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut st = lock(&s.store);
    let Some(mut obj) = st.objects.get(&(PINSETS, ns, name)).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    let finalized = obj["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty());
    if finalized {
        let out = st.change(&s.tx, "DELETED", obj);
        return axum::Json(out).into_response();
    }
    if obj["metadata"]["deletionTimestamp"].is_string() {
        return axum::Json(obj).into_response();
    }
    obj["metadata"]["deletionTimestamp"] = json!(now());
    let out = st.change(&s.tx, "MODIFIED", obj);
    axum::Json(out).into_response()
}

async fn create_lease(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    axum::Json(mut obj): axum::Json<Value>,
) -> Response {
    let mut st = lock(&s.store);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if st.leases.contains_key(&(ns.clone(), name.clone())) {
        return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
    }
    st.rv += 1;
    obj["metadata"]["namespace"] = json!(ns);
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    st.leases.insert((ns, name), obj.clone());
    (StatusCode::CREATED, axum::Json(obj)).into_response()
}

async fn get_lease(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut st = lock(&s.store);
    st.lease_reads += 1;
    match st.leases.get(&(ns, name)) {
        Some(o) => axum::Json(o.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
    }
}

async fn replace_lease(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    axum::Json(mut obj): axum::Json<Value>,
) -> Response {
    let mut st = lock(&s.store);
    let key = (ns, name);
    let Some(old) = st.leases.get(&key) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    if obj["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified",
        );
    }
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    st.leases.insert(key, obj.clone());
    axum::Json(obj).into_response()
}

async fn create_event(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    axum::Json(mut obj): axum::Json<Value>,
) -> Response {
    let mut st = lock(&s.store);
    st.rv += 1;
    obj["metadata"]["namespace"] = json!(ns);
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    st.events.push(obj.clone());
    (StatusCode::CREATED, axum::Json(obj)).into_response()
}

async fn patch_event(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    axum::Json(p): axum::Json<Value>,
) -> Response {
    let mut st = lock(&s.store);
    let Some(e) = st.events.iter_mut().find(|e| {
        e["metadata"]["namespace"] == ns.as_str() && e["metadata"]["name"] == name.as_str()
    }) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
    };
    merge(e, &p);
    axum::Json(e.clone()).into_response()
}
