//! IPFS Cluster compatibility of path pins (`POST`/`DELETE
//! /pins/{ipfs|ipns|ipld}/{path…}`), status semantics (`GET /pins/{cid}`
//! of unknown CIDs, `local=true`, recover) and the `/health/*` and `POST
//! /peers` routes, against in-process peers (embedded IPFS node or mock
//! Kubo per peer). Answers are compared with the JSON IPFS Cluster's types
//! encode (api/types.go): field names, JSON types, nulls vs empty arrays,
//! status codes.

use std::time::Duration;

use pinfleet::ipfs::{AddInput, AddOpts};
use reqwest::StatusCode;
use serde_json::Value;

use crate::compat_shapes::{self as shapes, check};
use crate::inproc::Api;
use crate::status::Fleet;
use crate::support::{cid_v1, http, write_tree};

async fn send(method: reqwest::Method, url: String) -> (StatusCode, Value) {
    let resp = http().request(method, url).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// An error answer is IPFS Cluster's `{"code", "message"}` with the status.
fn assert_error(status: StatusCode, body: &Value, want: StatusCode) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["code"], want.as_u16(), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_pins_resolve_through_the_embedded_node_and_answer_the_resolved_pin() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let tree = dir.path().join("site");
    write_tree(&tree, &[("docs/a.txt", "path pins"), ("index.html", "<p>")]);
    let added = api
        .ipfs
        .as_ref()
        .unwrap()
        .add(AddInput::Path(tree), AddOpts::default())
        .await
        .unwrap();
    let cid_of = |name: &str| {
        added
            .entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", added.entries))
            .cid
    };
    let root = added.root.cid().to_string();
    let file = pinfleet::manifest::CidKey::from_cid(cid_of("site/docs/a.txt")).unwrap();
    let base = &api.url;

    // The Go client's `PinPath`: POST with the pin options in the query.
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipfs/{root}/docs/a.txt?name=doc&replication=1&meta-k=v"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    check(&pin, &shapes::PIN, "pin");
    assert_eq!(
        pin["cid"],
        file.to_string(),
        "the resolved CID, not the path"
    );
    assert_eq!(pin["name"], "doc");
    assert_eq!(pin["metadata"]["k"], "v");
    assert_eq!(pin["type"], "pin");
    let (status, _) = send(reqwest::Method::GET, format!("{base}/allocations/{file}")).await;
    assert_eq!(status, StatusCode::OK, "the resolved CID is in the pinset");

    // A trailing slash and /ipld resolve the same way.
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipld/{root}/docs/a.txt/"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_eq!(pin["cid"], file.to_string());

    // UnpinPath answers the Pin as it now stands, and it is gone.
    let (status, pin) = send(
        reqwest::Method::DELETE,
        format!("{base}/pins/ipfs/{root}/docs/a.txt"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_eq!(pin["cid"], file.to_string());
    let (status, _) = send(reqwest::Method::GET, format!("{base}/allocations/{file}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A bare root pins without asking the node, as the client wrote it.
    let (status, pin) = send(reqwest::Method::POST, format!("{base}/pins/ipfs/{root}")).await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_eq!(pin["cid"], root);

    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_unresolvable_paths_answer_400_and_500_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), true, |s| s).await;
    let tree = dir.path().join("d");
    write_tree(&tree, &[("f.txt", "x")]);
    let added = api
        .ipfs
        .as_ref()
        .unwrap()
        .add(AddInput::Path(tree), AddOpts::default())
        .await
        .unwrap();
    let root = added.root.to_string();
    let base = &api.url;
    // Malformed: 400, as IPFS Cluster's ParsePinPathOrFail.
    for path in [
        "/pins/ipfs/not-a-cid/x".to_string(),
        format!("/pins/ipfs/{root}/../f.txt"),
        format!("/pins/ipld/{}x", &root[..10]),
    ] {
        let (status, body) = send(reqwest::Method::POST, format!("{base}{path}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
        let (status, body) = send(reqwest::Method::DELETE, format!("{base}{path}")).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
    }
    // Bad options: 400 before the node is asked.
    let (status, body) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipfs/{root}/f.txt?replication=x"),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    // Unresolvable: IPFS Cluster sends every resolve error as a 500.
    let (status, body) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipfs/{root}/missing.txt"),
    )
    .await;
    assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no link named \"missing.txt\""),
        "{body}"
    );
    // Through a file (not a directory): no such link either.
    let (status, body) = send(
        reqwest::Method::POST,
        format!("{base}/pins/ipfs/{root}/f.txt/deeper"),
    )
    .await;
    assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(api.allocations().await, 0, "nothing was pinned");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn path_pins_resolve_through_kubo_resolve_on_the_kubo_backend() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start_with(1, dir.path(), Duration::from_secs(60), |_| {}, None).await;
    let kubo = &fleet.nodes[0].kubo;
    let root = pinfleet::manifest::CidKey::parse(&cid_v1("kubo-path-root")).unwrap();
    let child: cid::Cid = cid_v1("kubo-path-child").parse().unwrap();
    kubo.put_link(root, "sub", child);
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{}/pins/ipfs/{root}/sub?name=k", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_eq!(pin["cid"], child.to_string());
    let resolves: Vec<_> = kubo
        .calls()
        .into_iter()
        .filter(|c| c.endpoint == "resolve")
        .collect();
    assert_eq!(resolves.len(), 1, "{resolves:?}");
    assert_eq!(resolves[0].args, [format!("/ipfs/{root}/sub")]);
    // Kubo's refusal is passed on as IPFS Cluster passes it: 500.
    let (status, body) = send(
        reqwest::Method::DELETE,
        format!("{}/pins/ipfs/{root}/nope", fleet.url),
    )
    .await;
    assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body["message"].as_str().unwrap().contains("no link named"),
        "{body}"
    );
    let (status, pin) = send(
        reqwest::Method::DELETE,
        format!("{}/pins/ipfs/{root}/sub", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    fleet.stop().await;
}

/// Every member of `fleet` is in `info`'s peer map, named by its peer name
/// and its (mock) IPFS node's ID and addresses, with status `want`.
fn assert_every_member(fleet: &Fleet, info: &Value, members: &[usize], want: &str) {
    check(info, &shapes::GLOBAL_PIN_INFO, "status");
    let map = info["peer_map"].as_object().unwrap();
    assert_eq!(map.len(), members.len(), "{info}");
    for i in members {
        let entry = &map[&fleet.id(*i)];
        assert_eq!(entry["status"], want, "{info}");
        assert_eq!(entry["peername"], format!("p{i}"), "{info}");
        let ipfs = entry["ipfs_peer_id"].as_str().unwrap();
        assert!(!ipfs.is_empty(), "{info}");
        let addrs = entry["ipfs_peer_addresses"].as_array().unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.as_str().unwrap().ends_with(&format!("/p2p/{ipfs}"))),
            "{info}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_cids_are_unpinned_on_every_member_and_local_asks_this_peer_only() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start_with(3, dir.path(), Duration::from_secs(60), |_| {}, None).await;
    let unknown = cid_v1("compat-status-unknown");
    // Not in the pinset: 200, unpinned on each of the 3 members (not 404).
    let (status, info) = send(
        reqwest::Method::GET,
        format!("{}/pins/{unknown}", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["cid"], unknown);
    assert_eq!(info["name"], "");
    assert_every_member(&fleet, &info, &[0, 1, 2], "unpinned");
    // local=true: this peer only.
    let (status, info) = send(
        reqwest::Method::GET,
        format!("{}/pins/{unknown}?local=true", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_every_member(&fleet, &info, &[0], "unpinned");

    // A known pin (every member) by `cids=`, with an unknown one, in order.
    let known = cid_v1("compat-status-known");
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{}/pins/{known}?replication=-1", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    let lines = crate::status::eventually("the known pin pinned on every member", || {
        let url = format!("{}/pins?cids={known},{unknown}", fleet.url);
        async move {
            let text = http().get(url).send().await.ok()?.text().await.ok()?;
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let pinned = lines.first()?["peer_map"]
                .as_object()?
                .values()
                .all(|e| e["status"] == "pinned");
            (pinned && lines.len() == 2).then_some(lines)
        }
    })
    .await;
    assert_eq!(lines[0]["cid"], known);
    assert_every_member(&fleet, &lines[0], &[0, 1, 2], "pinned");
    assert_eq!(lines[1]["cid"], unknown);
    assert_every_member(&fleet, &lines[1], &[0, 1, 2], "unpinned");
    // `local=true` with `cids=`: this peer's entry only.
    let (status, text) = fleet.get(&format!("/pins?cids={known}&local=true")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let line: Value = serde_json::from_str(text.trim()).unwrap();
    assert_every_member(&fleet, &line, &[0], "pinned");
    // A malformed CID in the list: 400, as IPFS Cluster's statusCidsHandler.
    let (status, body) = send(
        reqwest::Method::GET,
        format!("{}/pins?cids={known},nope", fleet.url),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);

    // Nothing failed: recover re-queues nothing and streams nothing.
    let resp = http()
        .post(format!("{}/pins/recover", fleet.url))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.text().await.unwrap().trim(), "");
    // Recover of one CID with local=true answers this peer's status only.
    let (status, info) = send(
        reqwest::Method::POST,
        format!("{}/pins/{known}/recover?local=true", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_every_member(&fleet, &info, &[0], "pinned");
    let (status, info) = send(
        reqwest::Method::POST,
        format!("{}/pins/{known}/recover", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_every_member(&fleet, &info, &[0, 1, 2], "pinned");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_update_copies_the_old_pins_options_and_unknown_modes_pin_recursively() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), false, |s| s).await;
    let base = &api.url;
    let (old, new) = (cid_v1("compat-update-old"), cid_v1("compat-update-new"));
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{base}/pins/{old}?name=v1&mode=direct&replication=1&meta-team=web"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    // The Go client's `PinUpdate` / `ipfs-cluster-ctl pin update OLD NEW`.
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{base}/pins/{new}?pin-update={old}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    check(&pin, &shapes::PIN, "pin");
    assert_eq!(pin["cid"], new);
    assert_eq!(pin["pin_update"], old, "{pin}");
    assert_eq!(pin["name"], "v1", "the old name when none is given");
    assert_eq!(pin["mode"], "direct");
    assert_eq!(pin["replication_factor_min"], 1);
    assert_eq!(pin["metadata"]["team"], "web");
    // A name in the query wins.
    let newer = cid_v1("compat-update-newer");
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{base}/pins/{newer}?pin-update={new}&name=v3"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert_eq!(pin["name"], "v3");
    assert_eq!(pin["mode"], "direct");
    // From a CID that is not pinned: 404 and nothing pinned.
    let orphan = cid_v1("compat-update-orphan");
    let (status, body) = send(
        reqwest::Method::POST,
        format!(
            "{base}/pins/{orphan}?pin-update={}",
            cid_v1("compat-update-none")
        ),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, _) = send(reqwest::Method::GET, format!("{base}/allocations/{orphan}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A pin-update from a malformed CID: 400.
    let (status, body) = send(
        reqwest::Method::POST,
        format!("{base}/pins/{orphan}?pin-update=nope"),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    // Plain pins never carry pin_update (omitempty).
    let (status, pin) = send(
        reqwest::Method::POST,
        format!("{base}/pins/{orphan}?mode=sideways"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pin}");
    assert!(pin.get("pin_update").is_none(), "{pin}");
    // IPFS Cluster reads an unknown mode as recursive.
    assert_eq!(pin["mode"], "recursive");
    assert_eq!(pin["max_depth"], -1);
    api.stop().await;
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_graph_alerts_bandwidth_and_peers_describe_every_member_even_a_silent_one() {
    use pinfleet::allocator::{Metric, PeerMetrics};
    let dir = tempfile::tempdir().unwrap();
    let view: pinfleet::api::MonitorView =
        std::sync::Arc::new(std::sync::Mutex::new(PeerMetrics::new()));
    let monitor = view.clone();
    let mut fleet = Fleet::start_with(
        3,
        dir.path(),
        Duration::from_secs(60),
        move |s| s.monitor = Some(monitor),
        None,
    )
    .await;
    let ids: Vec<String> = (0..3).map(|i| fleet.id(i)).collect();
    // The graph: every member, its name, its IPFS node, trusted, and
    // connected to the two others.
    let (status, g) = send(reqwest::Method::GET, format!("{}/health/graph", fleet.url)).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    check(&g, &shapes::CONNECT_GRAPH, "health/graph");
    assert_eq!(g["cluster_id"], ids[0]);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(g["id_to_peername"][id], format!("p{i}"), "{g}");
        assert_eq!(g["cluster_trust_links"][id], true, "{g}");
        let ipfs = g["cluster_to_ipfs"][id].as_str().unwrap();
        assert!(g["ipfs_links"][ipfs].is_array(), "{g}");
        // Links only to other members, both ways (a libp2p connection).
        for other in g["cluster_links"][id].as_array().unwrap() {
            let other = other.as_str().unwrap();
            assert!(ids.iter().any(|m| m == other) && other != id, "{g}");
            assert!(
                g["cluster_links"][other]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b == id.as_str()),
                "{g}"
            );
        }
    }
    // The first peer is everyone's bootstrap: connected to both others.
    assert_eq!(
        g["cluster_links"][&ids[0]].as_array().unwrap().len(),
        2,
        "{g}"
    );

    // Bandwidth: a map by protocol (empty: pinfleet counts none).
    let (status, bw) = send(
        reqwest::Method::GET,
        format!("{}/health/bandwidth", fleet.url),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{bw}");
    assert!(bw.as_object().is_some(), "{bw}");

    // Alerts: only the expired readings of members, newest first.
    let now = chrono::Utc::now().timestamp_millis();
    {
        let mut m = view.lock().unwrap();
        m.insert(Metric::freespace(ids[1].clone(), 10, now - 60_000));
        m.insert(Metric::numpin(ids[2].clone(), 3, now - 1_000));
        m.insert(Metric::numpin(ids[0].clone(), 3, now + 60_000));
        m.insert(Metric::numpin(
            "12D3KooWNotAMemberNotAMemberNotAMember",
            1,
            now - 5,
        ));
    }
    let (status, alerts) = send(reqwest::Method::GET, format!("{}/health/alerts", fleet.url)).await;
    assert_eq!(status, StatusCode::OK, "{alerts}");
    let alerts = alerts.as_array().unwrap().clone();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    for a in &alerts {
        check(a, &shapes::ALERT, "alert");
    }
    assert_eq!(
        (&alerts[0]["peer"], &alerts[0]["name"]),
        (&ids[2].clone().into(), &"numpin".into())
    );
    assert_eq!(alerts[1]["peer"], ids[1]);
    assert_eq!(alerts[1]["name"], "freespace");

    // Every member in /peers, asked; then one stops answering.
    let (status, text) = fleet.get("/peers").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let peers = ndjson(&text);
    assert_eq!(peers.len(), 3, "{text}");
    assert_eq!(peers[0]["id"], ids[0], "this peer first");
    for p in &peers {
        let i = ids.iter().position(|id| p["id"] == id.as_str()).unwrap();
        check(p, &shapes::ID, "peer");
        assert_eq!(p["error"], "", "{p}");
        assert_eq!(p["peername"], format!("p{i}"), "{p}");
        assert!(
            p["ipfs"]["id"].as_str().is_some_and(|s| !s.is_empty()),
            "{p}"
        );
        assert_eq!(p["cluster_peers"].as_array().unwrap().len(), 3, "{p}");
        assert!(!p["version"].as_str().unwrap().is_empty(), "{p}");
    }
    fleet.stop_node(2).await;
    let (status, text) = fleet.get("/peers").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let peers = ndjson(&text);
    assert_eq!(peers.len(), 3, "a silent member is still listed: {text}");
    let silent = peers.iter().find(|p| p["id"] == ids[2]).unwrap();
    check(silent, &shapes::ID, "silent peer");
    assert!(!silent["error"].as_str().unwrap().is_empty(), "{silent}");
    assert!(
        !silent["addresses"].as_array().unwrap().is_empty(),
        "{silent}"
    );
    // The graph keeps it, without links.
    let (_, g) = send(reqwest::Method::GET, format!("{}/health/graph", fleet.url)).await;
    assert_eq!(g["cluster_links"][&ids[2]], serde_json::json!([]), "{g}");
    assert!(g["cluster_to_ipfs"].get(&ids[2]).is_none(), "{g}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_peers_adds_a_waiting_peer_as_a_member_and_refuses_bad_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start_with(2, dir.path(), Duration::from_secs(60), |_| {}, None).await;
    let url = format!("{}/peers", fleet.url);
    let post = |body: String| {
        let url = url.clone();
        async move {
            let resp = http().post(url).body(body).send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str::<Value>(&text).unwrap())
        }
    };
    // IPFS Cluster's refusals.
    let (status, body) = post("{not json".into()).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "error decoding request body");
    let (status, body) = post(r#"{"peer_id":"nobody"}"#.into()).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "error decoding peer_id");

    // A peer that waits to join (its bootstrap address answers nothing).
    let key = libp2p::identity::Keypair::generate_ed25519();
    let nowhere: libp2p::Multiaddr =
        format!("/ip4/127.0.0.1/tcp/1/p2p/{}", libp2p::PeerId::random())
            .parse()
            .unwrap();
    let newcomer = crate::cluster::Peer::start(
        &dir.path().join("newcomer"),
        key,
        crate::cluster::SECRET,
        vec![nowhere],
        10_000,
    )
    .await
    .unwrap();
    let pid = newcomer.node.peer_id().to_string();
    // Without an address there is no way to reach it.
    let (status, body) = post(format!(r#"{{"peer_id":"{pid}"}}"#)).await;
    assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR);
    let addr = newcomer.addr().to_string();
    let (status, id) = post(format!(r#"{{"peer_id":"{pid}","addresses":["{addr}"]}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{id}");
    check(&id, &shapes::ID, "id");
    assert_eq!(id["id"], pid);
    newcomer
        .node
        .wait_ready(Duration::from_secs(30))
        .await
        .unwrap();
    let (_, text) = fleet.get("/peers").await;
    let listed: Vec<String> = ndjson(&text)
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert!(listed.contains(&pid), "{text}");
    // Adding a member again answers it, changing nothing.
    let (status, again) = post(format!(r#"{{"peer_id":"{pid}","addresses":["{addr}"]}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(fleet.nodes[0].peer.node.members().len(), 3);
    newcomer.stop().await;
    fleet.stop().await;
}
