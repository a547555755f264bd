//! The Kubernetes source (DESIGN §11): PinSet objects of the
//! `pinsets.pinfleet.io` custom resource. This module owns what is specific
//! to reading them: turning one object into a [`Loaded`] revision (checked
//! by the same loader as a file, with problems named by their field path,
//! `spec.pins[3].cid`), with the ConfigMap keys its `pinsFrom` names read
//! from its namespace; and the few writes the object itself needs (the
//! finalizer, the status subresource).
//!
//! It must not decide what to apply nor talk to the pinfleet cluster: the
//! reconcile engine (`crate::controller`, its kube driver) does both.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ::kube::api::{Api, Patch, PatchParams};
use ::kube::{Resource, ResourceExt};
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::manifest::model::{API_VERSION, KIND, PinSet, PinSetStatus};
use crate::manifest::{
    ConfigMapLists, Diagnostic, Diagnostics, Limits, LoadError, Loaded, PinSetId, load_str_with,
};

/// The finalizer that holds a deleted PinSet until its pins are released.
pub const FINALIZER: &str = "pinfleet.io/cleanup";

/// The field manager of every write this source makes.
pub const FIELD_MANAGER: &str = "pinfleet";

/// Annotations carried from the object into the loaded PinSet: pinfleet's
/// own (`pinfleet.io/force-prune`); others (kubectl's last applied
/// configuration) would only bloat the record.
const ANNOTATION_PREFIX: &str = "pinfleet.io/";

/// Reads a source spec: `kube` (every namespace) or `kube:NAMESPACE`.
/// `None` when `text` is not a kube source; an error for a namespace that
/// is not a DNS label.
pub fn parse_spec(text: &str) -> Option<Result<Option<String>, String>> {
    if text == "kube" {
        return Some(Ok(None));
    }
    let ns = text.strip_prefix("kube:")?;
    Some(
        crate::manifest::check_dns_label(ns)
            .map(|()| Some(ns.to_string()))
            .map_err(|e| format!("kube: source namespace: {e}")),
    )
}

/// `namespace/name` of an object (`default` when it has no namespace).
pub fn id_of(ps: &PinSet) -> PinSetId {
    PinSetId::new(
        ps.namespace()
            .unwrap_or_else(|| crate::manifest::DEFAULT_NAMESPACE.to_string()),
        ps.name_any(),
    )
}

/// The source name recorded with the PinSet of object `id`:
/// `kube:<namespace>/<name>`. One per object, so that what one object
/// owns in the cluster is never taken for another's.
pub fn source_name(id: &PinSetId) -> String {
    format!("kube:{}/{}", id.namespace, id.name)
}

/// True when `pinfleet.io/force-prune: "true"` is set on the object.
pub fn force_prune(ps: &PinSet) -> bool {
    ps.annotations()
        .get(crate::manifest::model::FORCE_PRUNE_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// True when the object carries [`FINALIZER`].
pub fn has_finalizer(ps: &PinSet) -> bool {
    ps.finalizers().iter().any(|f| f == FINALIZER)
}

/// The ConfigMaps an object's `pinsFrom` names (in its namespace), each once.
pub fn config_map_names(ps: &PinSet) -> BTreeSet<&str> {
    ps.spec
        .pins_from
        .iter()
        .filter_map(|l| l.value.config_map_key_ref.as_ref())
        .map(|r| r.name.value.as_str())
        .collect()
}

/// True when `ps` takes a `pinsFrom` list from ConfigMap `namespace/name`.
pub fn references(ps: &PinSet, namespace: &str, name: &str) -> bool {
    id_of(ps).namespace == namespace && config_map_names(ps).contains(name)
}

/// Reads the ConfigMap keys an object's `pinsFrom` names, then loads it
/// ([`load_from`]). A missing ConfigMap or key is a problem of the object
/// (`ManifestInvalid`); an API server that cannot be read is
/// [`LoadError::Io`] (`SourceUnavailable`).
pub async fn load(
    client: &kube::Client,
    ps: &PinSet,
    limits: &Limits,
) -> Result<Loaded, LoadError> {
    let id = id_of(ps);
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &id.namespace);
    let mut maps = ConfigMapLists::new();
    for name in config_map_names(ps) {
        let cm = api.get_opt(name).await.map_err(|e| LoadError::Io {
            path: PathBuf::from(format!("configmap {}/{name}", id.namespace)),
            source: std::io::Error::other(e),
        })?;
        let refs = ps.spec.pins_from.iter();
        for r in refs.filter_map(|l| l.value.config_map_key_ref.as_ref()) {
            if r.name.value != name {
                continue;
            }
            let key = &r.key.value;
            let text = match &cm {
                None => Err("the configmap does not exist".to_string()),
                Some(cm) => config_map_text(cm, key),
            };
            maps.insert((name.to_string(), key.clone()), text);
        }
    }
    load_from(ps, limits, &maps)
}

/// The text of `key` in `cm` (`data`, else UTF-8 `binaryData`).
fn config_map_text(cm: &ConfigMap, key: &str) -> Result<String, String> {
    if let Some(text) = cm.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(text.clone());
    }
    match cm.binary_data.as_ref().and_then(|d| d.get(key)) {
        Some(bytes) => String::from_utf8(bytes.0.clone())
            .map_err(|_| "the configmap's binaryData key is not UTF-8 text".to_string()),
        None => Err(format!(
            "the configmap has no key {}",
            crate::manifest::shown(key)
        )),
    }
}

/// Loads one PinSet object as a revision holding that PinSet alone, its
/// `pinsFrom` ConfigMap keys taken from `config_maps`. The revision is a
/// digest of what is applied (name, labels, pinfleet annotations, spec,
/// the ConfigMap keys' text), so an unchanged object is the same revision.
/// A problem is reported at its field path (`spec.pins[3].cid: …`), or in
/// its list (`configmap ns/name key k:3:1: …`).
pub fn load_from(
    ps: &PinSet,
    limits: &Limits,
    config_maps: &ConfigMapLists,
) -> Result<Loaded, LoadError> {
    let id = id_of(ps);
    let annotations: BTreeMap<&String, &String> = ps
        .annotations()
        .iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    let spec = serde_json::to_value(&ps.spec).map_err(|e| invalid(&id, "spec", &e.to_string()))?;
    let doc = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": id.name,
            "namespace": id.namespace,
            "labels": ps.labels(),
            "annotations": annotations,
        },
        "spec": spec,
    });
    let (text, paths) = render(&doc);
    let name = PathBuf::from(source_name(&id));
    match load_str_with(&name, &text, limits, Some(config_maps)) {
        Ok(pinsets) => {
            let mut hasher = Sha256::new();
            hasher.update(text.as_bytes());
            for ((cm, key), list) in config_maps {
                let list = list.as_deref().unwrap_or_default();
                for part in [cm.as_str(), key.as_str(), list] {
                    hasher.update((part.len() as u64).to_le_bytes());
                    hasher.update(part.as_bytes());
                }
            }
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            Ok(Loaded {
                source_digests: pinsets
                    .iter()
                    .map(|p| (p.id.clone(), digest.clone()))
                    .collect(),
                pinsets,
                digest,
                manifest_files: 1,
                lists: Vec::new(),
                duplicates: 0,
                changes: None,
            })
        }
        Err(d) => Err(LoadError::Invalid(Diagnostics(
            d.0.into_iter()
                .map(|d| {
                    if d.file != name {
                        return d; // in a ConfigMap's list
                    }
                    let path = usize::try_from(d.line)
                        .ok()
                        .and_then(|l| l.checked_sub(1))
                        .and_then(|l| paths.get(l))
                        .filter(|p| !p.is_empty())
                        .map_or("spec", String::as_str);
                    Diagnostic::file(Path::new(path), d.message)
                })
                .collect(),
        ))),
    }
}

fn invalid(id: &PinSetId, path: &str, message: &str) -> LoadError {
    LoadError::Invalid(Diagnostics(vec![Diagnostic::file(
        Path::new(path),
        format!("pinset {id}: {message}"),
    )]))
}

/// `value` as indented JSON (which YAML reads too, with line numbers), and
/// per line the field path of what starts on it (`spec.pins[3].cid`).
fn render(value: &Value) -> (String, Vec<String>) {
    let mut out = Renderer::default();
    out.value(value, "", 0);
    out.text.push('\n');
    (out.text, out.paths)
}

#[derive(Default)]
struct Renderer {
    text: String,
    paths: Vec<String>,
}

impl Renderer {
    fn newline(&mut self, path: &str, depth: usize) {
        if !self.paths.is_empty() {
            self.text.push('\n');
        }
        self.paths.push(path.to_string());
        for _ in 0..depth {
            self.text.push_str("  ");
        }
    }

    fn value(&mut self, v: &Value, path: &str, depth: usize) {
        if self.paths.is_empty() {
            self.newline(path, depth);
        }
        match v {
            Value::Object(m) if !m.is_empty() => {
                self.text.push('{');
                let last = m.len() - 1;
                for (i, (k, v)) in m.iter().enumerate() {
                    let child = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.newline(&child, depth + 1);
                    self.text.push_str(&Value::String(k.clone()).to_string());
                    self.text.push_str(": ");
                    self.value(v, &child, depth + 1);
                    if i != last {
                        self.text.push(',');
                    }
                }
                self.newline(path, depth);
                self.text.push('}');
            }
            Value::Array(a) if !a.is_empty() => {
                self.text.push('[');
                let last = a.len() - 1;
                for (i, v) in a.iter().enumerate() {
                    let child = format!("{path}[{i}]");
                    self.newline(&child, depth + 1);
                    self.value(v, &child, depth + 1);
                    if i != last {
                        self.text.push(',');
                    }
                }
                self.newline(path, depth);
                self.text.push(']');
            }
            scalar => {
                let _ = write!(self.text, "{scalar}");
            }
        }
    }
}

/// Why a write to the Kubernetes API failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeWriteError {
    /// The API server refused or could not be reached.
    #[error("cannot {what} pinset {id} in kubernetes")]
    Api {
        /// What was written.
        what: &'static str,
        /// The object.
        id: PinSetId,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

fn api_for(client: &kube::Client, id: &PinSetId) -> Api<PinSet> {
    Api::namespaced(client.clone(), &id.namespace)
}

/// Adds [`FINALIZER`] to the object (a merge patch carrying the object's
/// `resourceVersion`, so a concurrent change is a conflict, not a loss).
pub async fn add_finalizer(client: &kube::Client, ps: &PinSet) -> Result<(), KubeWriteError> {
    let mut finalizers = ps.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        finalizers.push(FINALIZER.to_string());
    }
    patch_finalizers(client, ps, finalizers, "add the finalizer to").await
}

/// Removes [`FINALIZER`] from the object; the API server then deletes it.
pub async fn remove_finalizer(client: &kube::Client, ps: &PinSet) -> Result<(), KubeWriteError> {
    let finalizers: Vec<String> = ps
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(client, ps, finalizers, "remove the finalizer from").await
}

async fn patch_finalizers(
    client: &kube::Client,
    ps: &PinSet,
    finalizers: Vec<String>,
    what: &'static str,
) -> Result<(), KubeWriteError> {
    let id = id_of(ps);
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": ps.resource_version(),
        }
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api_for(client, &id)
        .patch(&id.name, &params, &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|source| KubeWriteError::Api { what, id, source })
}

/// Writes `status` with a server-side apply patch on the status
/// subresource (field manager [`FIELD_MANAGER`], forced).
pub async fn apply_status(
    client: &kube::Client,
    ps: &PinSet,
    status: &PinSetStatus,
) -> Result<(), KubeWriteError> {
    let id = id_of(ps);
    let patch = json!({
        "apiVersion": PinSet::api_version(&()),
        "kind": PinSet::kind(&()),
        "status": status,
    });
    api_for(client, &id)
        .patch_status(
            &id.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(drop)
        .map_err(|source| KubeWriteError::Api {
            what: "write the status of",
            id,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Located;
    use crate::manifest::model::{PinEntry, PinSetSpec};

    fn object(cids: &[&str]) -> PinSet {
        let mut ps = PinSet::new(
            "a",
            PinSetSpec {
                suspend: false,
                prune: true,
                defaults: None,
                pins: cids
                    .iter()
                    .map(|c| PinEntry {
                        cid: Located::unlocated(c.to_string()),
                        name: None,
                        replication: None,
                        allocate: None,
                        mode: None,
                        expire_after: None,
                        metadata: BTreeMap::new(),
                        origins: Vec::new(),
                        shard: None,
                    })
                    .collect(),
                pins_from: Vec::new(),
            },
        );
        ps.metadata.namespace = Some("ns".into());
        ps
    }

    const GOOD: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";

    #[test]
    fn kube_sources_name_every_namespace_or_one() {
        assert_eq!(parse_spec("kube"), Some(Ok(None)));
        assert_eq!(parse_spec("kube:mirrors"), Some(Ok(Some("mirrors".into()))));
        assert!(matches!(parse_spec("kube:Not_A_Label"), Some(Err(_))));
        assert_eq!(parse_spec("dir:/x"), None);
        assert_eq!(parse_spec("kubectl"), None);
    }

    #[test]
    fn an_object_loads_as_one_pinset_with_a_stable_revision() {
        let a = load_from(&object(&[GOOD]), &Limits::default(), &ConfigMapLists::new()).unwrap();
        assert_eq!(a.pinsets.len(), 1);
        assert_eq!(a.pinsets[0].id, PinSetId::new("ns", "a"));
        assert_eq!(a.pinsets[0].pins.len(), 1);
        let again =
            load_from(&object(&[GOOD]), &Limits::default(), &ConfigMapLists::new()).unwrap();
        assert_eq!(a.digest, again.digest);
        let other = load_from(&object(&[]), &Limits::default(), &ConfigMapLists::new()).unwrap();
        assert_ne!(a.digest, other.digest);
    }

    #[test]
    fn a_configmap_list_is_part_of_the_revision_and_keeps_its_own_lines() {
        let mut ps = object(&[]);
        ps.spec.pins_from = vec![Located::unlocated(crate::manifest::model::PinsFrom {
            path: None,
            config_map_key_ref: Some(crate::manifest::model::ConfigMapKeyRef {
                name: Located::unlocated("lists".into()),
                key: Located::unlocated("k".into()),
            }),
        })];
        assert_eq!(
            config_map_names(&ps).into_iter().collect::<Vec<_>>(),
            ["lists"]
        );
        assert!(references(&ps, "ns", "lists"));
        assert!(!references(&ps, "other", "lists"));
        let key = ("lists".to_string(), "k".to_string());
        let mut maps = ConfigMapLists::new();
        maps.insert(key.clone(), Ok(format!("{GOOD}\n")));
        let a = load_from(&ps, &Limits::default(), &maps).unwrap();
        assert_eq!(a.pinsets[0].pins.len(), 1);
        maps.insert(key.clone(), Ok(format!("# the same pins\n{GOOD}\n")));
        let b = load_from(&ps, &Limits::default(), &maps).unwrap();
        assert_ne!(a.digest, b.digest, "a ConfigMap edit is a new revision");
        maps.insert(key.clone(), Ok(format!("{GOOD}\nbad\n")));
        let e = load_from(&ps, &Limits::default(), &maps).unwrap_err();
        assert!(
            e.to_string().starts_with("configmap ns/lists key k:2:1: "),
            "{e}"
        );
        maps.insert(key, Err("the configmap does not exist".into()));
        let e = load_from(&ps, &Limits::default(), &maps).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.pinsFrom[0].configMapKeyRef.name: pinsFrom configmap ns/lists key k: the configmap does not exist"
        );
    }

    #[test]
    fn a_bad_cid_is_reported_at_its_field_path() {
        let e = load_from(
            &object(&[GOOD, GOOD, GOOD, "not-a-cid"]),
            &Limits::default(),
            &ConfigMapLists::new(),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("spec.pins[3].cid: "), "{text}");
    }
}
