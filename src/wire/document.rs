//! A resolved PinSet written back as a manifest document (JSON), so that a
//! client can send `PUT /pinsets/{ns}/{name}` a PinSet whose `pinsFrom`
//! lists it has already read: every listed CID becomes an inline pin.
//!
//! The most common pin options become `spec.defaults` and pins list only
//! what differs from them, so a million-pin list costs a line per pin and
//! the server shares one copy of the options again. Loading the document
//! gives back the same `DesiredPinSet` (except `source`).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

use crate::manifest::duration::format_duration;
use crate::manifest::model::{API_VERSION, KIND};
use crate::manifest::{DesiredPin, DesiredPinSet, PinMode, PinOptions, ReplicationFactors};

/// A PinSet manifest document for a resolved PinSet; serialise it with
/// serde (it borrows the PinSet and builds nothing per pin up front).
///
/// `user_allocations` and `expire_at_ms` have no manifest field and are left
/// out; manifests never set them.
#[derive(Debug)]
pub struct ManifestDocument<'a> {
    pinset: &'a DesiredPinSet,
    defaults: Option<&'a PinOptions>,
}

impl<'a> ManifestDocument<'a> {
    /// The document of `pinset`.
    pub fn new(pinset: &'a DesiredPinSet) -> Self {
        Self {
            pinset,
            defaults: choose_defaults(pinset),
        }
    }
}

/// The manifest document of `pinset` as a JSON value.
pub fn to_manifest_json(pinset: &DesiredPinSet) -> serde_json::Value {
    // Serialising plain maps, strings and numbers into a Value cannot fail.
    serde_json::to_value(ManifestDocument::new(pinset)).unwrap_or_default()
}

static NO_DEFAULTS: std::sync::LazyLock<PinOptions> = std::sync::LazyLock::new(PinOptions::default);

impl Serialize for ManifestDocument<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ps = self.pinset;
        let base: &PinOptions = self.defaults.unwrap_or(&NO_DEFAULTS);
        let doc = Doc {
            api_version: API_VERSION,
            kind: KIND,
            metadata: Meta {
                name: &ps.id.name,
                namespace: &ps.id.namespace,
                labels: &ps.labels,
                annotations: &ps.annotations,
            },
            spec: Spec {
                suspend: ps.suspend,
                prune: ps.prune,
                defaults: self.defaults.map(|d| Overrides::of(d, &NO_DEFAULTS)),
                pins: Pins {
                    pins: &ps.pins,
                    base,
                },
            },
        };
        doc.serialize(s)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Doc<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Meta<'a>,
    spec: Spec<'a>,
}

#[derive(Serialize)]
struct Meta<'a> {
    name: &'a str,
    namespace: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Spec<'a> {
    suspend: bool,
    prune: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    defaults: Option<Overrides<'a>>,
    pins: Pins<'a>,
}

struct Pins<'a> {
    pins: &'a BTreeMap<crate::manifest::CidKey, DesiredPin>,
    base: &'a PinOptions,
}

impl Serialize for Pins<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.pins.len()))?;
        for (cid, pin) in self.pins {
            let cid = match &pin.written_as {
                Some(w) => w.to_string(),
                None => cid.to_string(),
            };
            let o: &PinOptions = &pin.spec.options;
            let overrides = if std::ptr::eq(o, self.base) || o == self.base {
                Overrides::default()
            } else {
                Overrides::of(o, self.base)
            };
            seq.serialize_element(&Entry {
                cid,
                name: (!pin.spec.name.is_empty()).then_some(pin.spec.name.as_str()),
                overrides,
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct Entry<'a> {
    cid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(flatten)]
    overrides: Overrides<'a>,
}

/// The fields of `o` that differ from `base`.
#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Overrides<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<Replication>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allocate: Option<Allocate<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<PinMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origins: Option<&'a Vec<String>>,
}

impl<'a> Overrides<'a> {
    fn of(o: &'a PinOptions, base: &PinOptions) -> Self {
        Self {
            replication: (o.replication != base.replication).then_some(Replication {
                min: o.replication.min,
                max: o.replication.max,
            }),
            allocate: (o.allocate_tags != base.allocate_tags).then_some(Allocate {
                tags: &o.allocate_tags,
            }),
            mode: (o.mode != base.mode).then_some(o.mode),
            expire_after: if o.expire_after != base.expire_after {
                o.expire_after.map(format_duration)
            } else {
                None
            },
            metadata: (o.metadata != base.metadata).then_some(&o.metadata),
            origins: (!o.origins.is_empty()).then_some(&o.origins),
        }
    }
}

#[derive(Serialize)]
struct Replication {
    min: i32,
    max: i32,
}

#[derive(Serialize)]
struct Allocate<'a> {
    tags: &'a BTreeMap<String, String>,
}

/// The options most pins share, when every other pin can be written as
/// overrides of them (a pin cannot drop a default's metadata key, expiry or
/// replication); `None` when no defaults are needed or possible.
fn choose_defaults(ps: &DesiredPinSet) -> Option<&PinOptions> {
    // Count by value, in CID order, so the choice is deterministic; pins
    // sharing one `Arc` (the usual case) skip the hashing.
    let mut counts: HashMap<&PinOptions, (usize, usize)> = HashMap::new();
    let mut last: Option<&PinOptions> = None;
    for (i, pin) in ps.pins.values().enumerate() {
        let o: &PinOptions = &pin.spec.options;
        let key = match last {
            Some(l) if std::ptr::eq(l, o) => l,
            _ => o,
        };
        last = Some(key);
        counts.entry(key).or_insert((0, i)).0 += 1;
    }
    let (best, _) = counts
        .into_iter()
        .max_by_key(|(_, (n, first))| (*n, std::cmp::Reverse(*first)))?;
    if *best == PinOptions::default()
        || !best.origins.is_empty()
        || !best.user_allocations.is_empty()
        || best.expire_at_ms.is_some()
    {
        return None;
    }
    let expressible = |o: &PinOptions| {
        std::ptr::eq(o, best)
            || o == best
            || ((best.replication == ReplicationFactors::default()
                || o.replication != ReplicationFactors::default())
                && (best.expire_after.is_none() || o.expire_after.is_some())
                && best.metadata.keys().all(|k| o.metadata.contains_key(k)))
    };
    ps.pins
        .values()
        .all(|p| expressible(&p.spec.options))
        .then_some(best)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::{Limits, load_paths, load_str};

    fn round_trip(ps: &DesiredPinSet) -> DesiredPinSet {
        let json = serde_json::to_string(&ManifestDocument::new(ps)).unwrap();
        let mut back = load_str(Path::new("body"), &json, &Limits::default())
            .unwrap_or_else(|d| panic!("{d}\n{json}"));
        assert_eq!(back.len(), 1);
        let mut back = back.remove(0);
        back.source = ps.source.clone();
        back
    }

    #[test]
    fn examples_survive_the_round_trip() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let loaded = load_paths(&[dir], &Limits::default()).unwrap();
        assert!(loaded.pinsets.len() >= 4);
        for ps in &loaded.pinsets {
            assert_eq!(&round_trip(ps), ps, "{}", ps.id);
        }
    }

    #[test]
    fn list_pins_share_the_defaults() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pinsfrom.yaml");
        let loaded = load_paths(&[dir], &Limits::default()).unwrap();
        let ps = &loaded.pinsets[0];
        let v = to_manifest_json(ps);
        assert_eq!(v["spec"]["defaults"]["replication"]["min"], 1);
        let pins = v["spec"]["pins"].as_array().unwrap();
        assert_eq!(pins.len(), ps.pins.len());
        assert!(pins.iter().all(|p| p.get("metadata").is_none()), "{v}");
        assert!(v["spec"].get("pinsFrom").is_none());
    }

    #[test]
    fn a_pin_without_a_default_key_disables_the_defaults() {
        let text = r#"
apiVersion: pinfleet.io/v1alpha1
kind: PinSet
metadata: {name: x}
spec:
  pins:
    - cid: QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG
      metadata: {a: "1"}
      expireAfter: 1h
    - cid: bafkreibvtdhg7fs3esa74jrrnqdlgckqyrvmp6hhekprasvhr5lztf3gru
      metadata: {a: "1"}
      expireAfter: 1h
    - cid: bafybeidupkhtta4v3xuokjgz7gbxqs6yiqofz7sda622a6n6kqjo4zodcq
"#;
        let ps = load_str(Path::new("t"), text, &Limits::default())
            .unwrap()
            .remove(0);
        let v = to_manifest_json(&ps);
        assert!(v["spec"].get("defaults").is_none(), "{v}");
        assert_eq!(round_trip(&ps), ps);
    }
}
