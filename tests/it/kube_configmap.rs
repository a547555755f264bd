//! `pinsFrom` ConfigMap keys through the kube source: a PinSet object whose
//! list lives in a ConfigMap of its namespace, read from the in-process fake
//! API server (`fake_kube`) and applied to a real one-peer cluster. A
//! ConfigMap change reconciles the PinSets naming it (the object itself does
//! not change, so neither does its generation); a missing ConfigMap or key,
//! or a bad line in the list, stalls the PinSet with nothing applied. Every
//! wait has a deadline.

use serde_json::{Value, json};

use pinfleet::controller::KubeOptions;

use crate::kube_source::{Rig, condition, message, options, seeds};
use crate::status::eventually;
use crate::support::recorded_at;

/// A spec taking its pins from `configmap/key`, plus `inline` pins.
fn from_config_map(configmap: &str, key: &str, inline: &[String]) -> Value {
    json!({
        "pins": inline.iter().map(|c| json!({"cid": c})).collect::<Vec<_>>(),
        "pinsFrom": [{"configMapKeyRef": {"name": configmap, "key": key}}],
    })
}

/// A CID list as a pinsFrom file holds it: one CID (and a name) per line.
fn list(cids: &[String]) -> String {
    let mut text = String::from("# pinned for the mirror\n");
    for (i, c) in cids.iter().enumerate() {
        text.push_str(&format!("{c} item-{i}\n"));
    }
    text
}

/// How many times the peer's Kubo was asked to pin `cid`.
fn adds(rig: &Rig, cid: &str) -> usize {
    rig.fleet.nodes[0]
        .kubo
        .calls()
        .iter()
        .filter(|c| c.endpoint == "pin/add" && c.args.first().map(String::as_str) == Some(cid))
        .count()
}

#[tokio::test]
async fn a_configmap_list_is_pinned_and_its_edits_apply_only_the_difference() {
    let rig = Rig::start().await;
    let cids = seeds("cm-edit", 6);
    let (inline, listed) = (&cids[..1], &cids[1..4]);
    rig.fake
        .put_config_map("team-a", "mirror-list", &[("cids.txt", &list(listed))]);
    rig.create(
        "team-a",
        "mirror",
        from_config_map("mirror-list", "cids.txt", inline),
        json!({}),
    )
    .await;
    let o = rig
        .until_condition("team-a", "mirror", 1, "Ready", ("True", "Succeeded"))
        .await;
    assert_eq!(o["status"]["summary"]["total"], 4, "{o}");
    assert_eq!(o["status"]["summary"]["pinned"], 4, "{o}");
    for c in &cids[..4] {
        assert_eq!(
            rig.owners(c).await.unwrap(),
            ["pinset:team-a/mirror"],
            "owner of {c}"
        );
    }
    // The list's names are the pins' names.
    let pin: Value =
        crate::support::get_json(&format!("{}/allocations/{}", rig.fleet.url, cids[2])).await;
    assert_eq!(pin["name"], "item-1", "{pin}");

    // The list drops cids[1] and gains cids[4] and cids[5]: the object is
    // unchanged (generation 1) but its pins follow the ConfigMap.
    rig.fake
        .put_config_map("team-a", "mirror-list", &[("cids.txt", &list(&cids[2..6]))]);
    let o = eventually("the edited list applied and reported", || async {
        let o = rig.fake.object("team-a", "mirror")?;
        let st = &o["status"];
        (st["observedGeneration"] == 1
            && st["summary"]["total"] == 5
            && st["summary"]["pinned"] == 5
            && condition(st, "Ready") == Some(("True".into(), "Succeeded".into())))
        .then_some(o)
    })
    .await;
    assert_eq!(o["metadata"]["generation"], 1);
    assert!(rig.owners(&cids[1]).await.is_none(), "cids[1] stays owned");
    for c in [&cids[0], &cids[2], &cids[3], &cids[4], &cids[5]] {
        assert_eq!(rig.owners(c).await.unwrap(), ["pinset:team-a/mirror"]);
    }
    // Each CID was pinned once: what stayed was not pinned again.
    for c in &cids {
        assert_eq!(adds(&rig, c), 1, "{c}");
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_missing_configmap_or_key_stalls_until_it_exists_and_keeps_the_last_pins() {
    let rig = Rig::start().await;
    let cids = seeds("cm-missing", 3);
    // A ConfigMap of that name in another namespace is not the PinSet's.
    rig.fake
        .put_config_map("team-b", "lists", &[("main", &list(&cids))]);
    rig.create(
        "team-a",
        "web",
        from_config_map("lists", "main", &[]),
        json!({}),
    )
    .await;
    let o = rig
        .until_condition("team-a", "web", 1, "Stalled", ("True", "ManifestInvalid"))
        .await;
    let m = message(&o["status"], "Stalled");
    assert!(
        m.contains("spec.pinsFrom[0].configMapKeyRef")
            && m.contains("configmap team-a/lists key main")
            && m.contains("does not exist"),
        "{m}"
    );
    assert!(recorded_at(&rig.fleet.url, "team-a", "web").await.is_none());
    let events = rig.fake.events("team-a", "web");
    assert_eq!(
        events.iter().filter(|e| e.1 == "ManifestInvalid").count(),
        1,
        "{events:?}"
    );

    // The ConfigMap appears without the key: the message says which.
    rig.fake
        .put_config_map("team-a", "lists", &[("other", &list(&cids))]);
    eventually("the missing key reported", || async {
        let o = rig.fake.object("team-a", "web")?;
        message(&o["status"], "Stalled")
            .contains("has no key \"main\"")
            .then_some(())
    })
    .await;
    assert!(recorded_at(&rig.fleet.url, "team-a", "web").await.is_none());

    // With the key, the PinSet is applied.
    rig.fake
        .put_config_map("team-a", "lists", &[("main", &list(&cids[..2]))]);
    let o = rig
        .until_condition("team-a", "web", 1, "Ready", ("True", "Succeeded"))
        .await;
    assert_eq!(o["status"]["summary"]["total"], 2);
    assert_eq!(
        condition(&o["status"], "Stalled").unwrap().0,
        "False",
        "{o}"
    );

    // The ConfigMap goes: stalled again, the last good pins stay.
    rig.fake.delete_config_map("team-a", "lists");
    let o = rig
        .until_condition("team-a", "web", 1, "Stalled", ("True", "ManifestInvalid"))
        .await;
    assert!(message(&o["status"], "Stalled").contains("does not exist"));
    for c in &cids[..2] {
        assert_eq!(rig.owners(c).await.unwrap(), ["pinset:team-a/web"]);
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_bad_cid_in_a_configmap_names_the_key_and_line_and_applies_nothing() {
    let rig = Rig::start().await;
    let cids = seeds("cm-bad", 2);
    let text = format!("{}\n# a comment\n  not-a-cid web\n{}\n", cids[0], cids[1]);
    rig.fake
        .put_config_map("team-a", "lists", &[("bad.txt", &text)]);
    rig.create(
        "team-a",
        "web",
        from_config_map("lists", "bad.txt", &[]),
        json!({}),
    )
    .await;
    let o = rig
        .until_condition("team-a", "web", 1, "Stalled", ("True", "ManifestInvalid"))
        .await;
    let m = message(&o["status"], "Stalled");
    assert!(
        m.contains("configmap team-a/lists key bad.txt:3:3: "),
        "{m}"
    );
    for c in &cids {
        assert!(rig.owners(c).await.is_none(), "{c} was applied");
        assert_eq!(adds(&rig, c), 0);
    }
    let events = rig.fake.events("team-a", "web");
    let last = events.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("Warning", "ManifestInvalid")
    );
    assert!(last.2.contains("key bad.txt:3:3"), "{last:?}");

    // Fixed in the ConfigMap: applied.
    rig.fake
        .put_config_map("team-a", "lists", &[("bad.txt", &list(&cids))]);
    rig.until_condition("team-a", "web", 1, "Ready", ("True", "Succeeded"))
        .await;
    for c in &cids {
        assert_eq!(rig.owners(c).await.unwrap(), ["pinset:team-a/web"]);
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_missing_configmap_is_read_again_with_backoff_even_when_its_event_is_lost() {
    let rig = Rig::start().await;
    let cids = seeds("cm-backoff", 2);
    rig.create(
        "team-a",
        "web",
        from_config_map("lists", "main", &[]),
        json!({}),
    )
    .await;
    rig.until_condition("team-a", "web", 1, "Stalled", ("True", "ManifestInvalid"))
        .await;
    // No watch event: only the retry (backoff at most 2 s here) finds it.
    rig.fake
        .put_config_map_unwatched("team-a", "lists", &[("main", &list(&cids))]);
    let o = rig
        .until_condition("team-a", "web", 1, "Ready", ("True", "Succeeded"))
        .await;
    assert_eq!(o["status"]["summary"]["total"], 2);
    rig.stop().await;
}

#[tokio::test]
async fn a_controller_of_one_namespace_watches_only_that_namespaces_configmaps() {
    let opts = KubeOptions {
        namespace: Some("team-a".into()),
        ..options()
    };
    let rig = Rig::start_with(opts, None).await;
    let cids = seeds("cm-scope", 2);
    rig.fake
        .put_config_map("team-a", "lists", &[("main", &list(&cids))]);
    rig.create(
        "team-a",
        "web",
        from_config_map("lists", "main", &[]),
        json!({}),
    )
    .await;
    rig.until_condition("team-a", "web", 1, "Ready", ("True", "Succeeded"))
        .await;
    let scopes = rig.fake.config_map_scopes();
    assert!(!scopes.is_empty(), "configmaps are not watched");
    assert!(
        scopes.iter().all(|s| s.as_deref() == Some("team-a")),
        "{scopes:?}"
    );
    rig.stop().await;
}
