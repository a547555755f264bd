//! Meaning checks on a parsed manifest document: names, CIDs, replication,
//! durations, labels. Every problem becomes a located diagnostic; checking goes
//! on after the first so that a user sees all of them at once.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::Path;
use std::sync::Arc;

use super::cidkey::CidKey;
use super::desired::{
    DesiredPin, DesiredPinSet, PinOptions, PinSetId, PinSpec, ReplicationFactors, ShardKind,
    ShardRole, SourceRef,
};
use super::diag::{Diagnostic, shown};
use super::duration::parse_duration;
use super::load::written_as;
use super::located::{Located, Pos};
use super::model::{
    API_VERSION, Allocate, KIND, PinDefaults, PinEntry, PinMode, PinSetDocument, PinsFrom,
    Replication, ShardSize, ShardSpec,
};
use super::size::parse_size;

/// Longest pin name accepted.
pub const MAX_PIN_NAME: usize = 1024;
/// Smallest `shard.size`: a block may be 1 MiB, and a shard holds at least
/// one.
pub const MIN_SHARD_SIZE: u64 = 1 << 20;
/// Namespace of a manifest without one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where a pin was written, for duplicate errors.
pub(crate) struct PinSource<'a> {
    pub file: &'a Path,
    pub pos: Pos,
}

/// A `pinsFrom` entry still to be read.
pub(crate) struct ListRef {
    pub target: ListTarget,
    pub pos: Pos,
}

/// What a `pinsFrom` entry names.
pub(crate) enum ListTarget {
    /// A file, relative to the manifest.
    Path(String),
    /// A ConfigMap key in the PinSet's namespace: `(name, key)`.
    ConfigMap(String, String),
}

/// A document that passed its own checks; its lists are not read yet.
pub(crate) struct CheckedDocument {
    pub pinset: DesiredPinSet,
    pub lists: Vec<ListRef>,
    /// Options every listed CID gets (the PinSet's defaults).
    pub list_options: Arc<PinOptions>,
    /// CIDs declared again, identically.
    pub duplicates: usize,
}

impl CheckedDocument {
    /// Adds a pin; a CID seen before is fine only with the same name and options.
    pub fn insert(
        &mut self,
        key: CidKey,
        pin: DesiredPin,
        at: PinSource<'_>,
    ) -> Result<(), Diagnostic> {
        match self.pinset.pins.entry(key) {
            Entry::Vacant(v) => {
                v.insert(pin);
                Ok(())
            }
            Entry::Occupied(o) if o.get().spec.same_as(&pin.spec) => {
                self.duplicates += 1;
                Ok(())
            }
            Entry::Occupied(o) => Err(Diagnostic::at(
                at.file,
                at.pos,
                format!(
                    "duplicate CID {} in PinSet {} with a different name or options than its first entry",
                    o.key(),
                    self.pinset.id
                ),
            )),
        }
    }
}

/// Checks one document of one file.
pub(crate) struct DocumentChecker<'a> {
    file: &'a Path,
    diags: &'a mut Vec<Diagnostic>,
}

impl<'a> DocumentChecker<'a> {
    pub fn new(file: &'a Path, diags: &'a mut Vec<Diagnostic>) -> Self {
        Self { file, diags }
    }

    fn err(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic::at(self.file, pos, message));
    }

    /// Returns the checked document, or `None` when its identity is unusable
    /// (wrong kind, bad name). Other problems are pushed as diagnostics while
    /// a document is still returned, so that its lists are checked too.
    pub fn check(mut self, doc: PinSetDocument) -> Option<CheckedDocument> {
        if doc.api_version.value != API_VERSION {
            self.err(
                doc.api_version.pos,
                format!(
                    "apiVersion {} is not supported, expected {API_VERSION:?}",
                    shown(&doc.api_version.value)
                ),
            );
        }
        if doc.kind.value != KIND {
            self.err(
                doc.kind.pos,
                format!(
                    "kind {} is not supported, expected {KIND:?}",
                    shown(&doc.kind.value)
                ),
            );
            return None;
        }
        let meta = doc.metadata.value;
        let name_ok = self.dns_label("metadata.name", &meta.name);
        let namespace = match &meta.namespace {
            Some(ns) if self.dns_label("metadata.namespace", ns) => ns.value.clone(),
            Some(_) => return None,
            None => DEFAULT_NAMESPACE.to_string(),
        };
        if !name_ok {
            return None;
        }
        for (k, v) in &meta.labels {
            if let Err(e) = check_label_key(k).and_then(|()| check_label_value(v)) {
                self.err(doc.metadata.pos, format!("label {}: {e}", shown(k)));
            }
        }
        for k in meta.annotations.keys() {
            if let Err(e) = check_label_key(k) {
                self.err(doc.metadata.pos, format!("annotation {}: {e}", shown(k)));
            }
        }

        let spec = doc.spec;
        let defaults = spec.defaults.unwrap_or_default();
        let base = self.options(&defaults, None);
        let list_options = Arc::new(base.clone());
        let id = PinSetId::new(namespace, meta.name.value);
        let mut checked = CheckedDocument {
            pinset: DesiredPinSet {
                id,
                labels: meta.labels,
                annotations: meta.annotations,
                suspend: spec.suspend,
                prune: spec.prune,
                source: SourceRef {
                    file: self.file.to_path_buf(),
                    pos: doc.metadata.pos,
                },
                pins: BTreeMap::new(),
            },
            lists: Vec::new(),
            list_options: Arc::clone(&list_options),
            duplicates: 0,
        };
        for entry in spec.pins {
            self.pin(entry, &defaults, &list_options, &mut checked);
        }
        for list in spec.pins_from {
            if let Some(l) = self.list_ref(list) {
                checked.lists.push(l);
            }
        }
        Some(checked)
    }

    /// A `pinsFrom` entry: a `path` or a `configMapKeyRef`, not both.
    fn list_ref(&mut self, list: Located<PinsFrom>) -> Option<ListRef> {
        match (list.value.path, list.value.config_map_key_ref) {
            (Some(path), None) => Some(ListRef {
                target: ListTarget::Path(path.value),
                pos: path.pos,
            }),
            (None, Some(r)) => {
                let key_ok = !r.key.value.is_empty()
                    && r.key.value.len() <= 253
                    && r.key
                        .value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !key_ok {
                    self.err(
                        r.key.pos,
                        format!(
                            "configMapKeyRef key {}: must be 1 to 253 letters, digits, '-', '_' or '.'",
                            shown(&r.key.value)
                        ),
                    );
                }
                let name_ok = !r.name.value.is_empty()
                    && r.name.value.len() <= 253
                    && r.name.value.split('.').all(|p| check_dns_label(p).is_ok());
                if !name_ok {
                    self.err(
                        r.name.pos,
                        format!(
                            "configMapKeyRef name {}: must be a DNS-1123 subdomain",
                            shown(&r.name.value)
                        ),
                    );
                }
                let pos = r.name.pos;
                (key_ok && name_ok).then_some(ListRef {
                    target: ListTarget::ConfigMap(r.name.value, r.key.value),
                    pos,
                })
            }
            _ => {
                self.err(
                    list.pos,
                    "a pinsFrom entry names exactly one of path and configMapKeyRef",
                );
                None
            }
        }
    }

    fn pin(
        &mut self,
        entry: PinEntry,
        defaults: &PinDefaults,
        shared: &Arc<PinOptions>,
        checked: &mut CheckedDocument,
    ) {
        let key = match CidKey::parse(&entry.cid.value) {
            Ok(k) => Some(k),
            Err(e) => {
                self.err(entry.cid.pos, e.to_string());
                None
            }
        };
        let name = entry
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_default();
        if name.len() > MAX_PIN_NAME {
            let pos = entry.name.as_ref().map(|n| n.pos).unwrap_or(entry.cid.pos);
            self.err(pos, format!("pin name is longer than {MAX_PIN_NAME} bytes"));
        }
        let overrides = entry.replication.is_some()
            || entry.allocate.is_some()
            || entry.mode.is_some()
            || entry.expire_after.is_some()
            || !entry.metadata.is_empty()
            || !entry.origins.is_empty()
            || entry.shard.is_some();
        let mut options = if overrides {
            Arc::new(self.options(defaults, Some(&entry)))
        } else {
            Arc::clone(shared)
        };
        let Some(key) = key else { return };
        if let Some(shard) = &entry.shard
            && let Some(role) = self.shard(shard, &key, &options)
        {
            Arc::make_mut(&mut options).shard_role = Some(role);
        }
        let pin = DesiredPin {
            written_as: written_as(&key, &entry.cid.value),
            spec: PinSpec { name, options },
        };
        let at = PinSource {
            file: self.file,
            pos: entry.cid.pos,
        };
        if let Err(d) = checked.insert(key, pin, at) {
            self.diags.push(d);
        }
    }

    /// Resolves options: the pin's own values over the PinSet's defaults.
    fn options(&mut self, defaults: &PinDefaults, pin: Option<&PinEntry>) -> PinOptions {
        let replication = pin
            .and_then(|p| p.replication.as_ref())
            .or(defaults.replication.as_ref())
            .map(|r| self.replication(r))
            .unwrap_or_default();
        let allocate: Option<&Allocate> = pin
            .and_then(|p| p.allocate.as_ref())
            .or(defaults.allocate.as_ref());
        let allocate_tags = allocate.map(|a| a.tags.clone()).unwrap_or_default();
        for k in allocate_tags.keys() {
            if k.is_empty() {
                let pos = pin.map(|p| p.cid.pos).unwrap_or_default();
                self.err(pos, "allocate.tags keys must not be empty");
            }
        }
        let mode = pin
            .and_then(|p| p.mode)
            .or(defaults.mode)
            .unwrap_or_default();
        let expire_after = pin
            .and_then(|p| p.expire_after.as_ref())
            .or(defaults.expire_after.as_ref())
            .and_then(|d| self.expire(d));
        let mut metadata = defaults.metadata.clone();
        let mut origins = Vec::new();
        if let Some(p) = pin {
            metadata.extend(p.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
            for o in &p.origins {
                match o.value.parse::<multiaddr::Multiaddr>() {
                    Ok(_) => origins.push(o.value.clone()),
                    Err(e) => self.err(
                        o.pos,
                        format!("invalid origin multiaddress {}: {e}", shown(&o.value)),
                    ),
                }
            }
        }
        if metadata.keys().any(String::is_empty) {
            let pos = pin.map(|p| p.cid.pos).unwrap_or_default();
            self.err(pos, "metadata keys must not be empty");
        }
        PinOptions {
            mode,
            replication,
            allocate_tags,
            expire_after,
            metadata,
            origins,
            ..PinOptions::default()
        }
    }

    fn replication(&mut self, r: &Located<Replication>) -> ReplicationFactors {
        let Replication { min, max } = r.value;
        let valid = |n: i32| n == -1 || n >= 1;
        let problem = if !valid(min) || !valid(max) {
            Some(format!(
                "replication min {min} / max {max}: each must be -1 (every peer) or at least 1"
            ))
        } else if min == -1 && max != -1 {
            Some(format!(
                "replication min -1 (every peer) needs max -1 too, got max {max}"
            ))
        } else if max != -1 && min > max {
            Some(format!("replication min {min} is greater than max {max}"))
        } else {
            None
        };
        if let Some(p) = problem {
            self.err(r.pos, p);
        }
        ReplicationFactors { min, max }
    }

    fn expire(&mut self, d: &Located<String>) -> Option<std::time::Duration> {
        match parse_duration(&d.value) {
            Ok(v) if v.is_zero() => {
                self.err(d.pos, "expireAfter must be longer than zero");
                None
            }
            Ok(v) => Some(v),
            Err(e) => {
                self.err(d.pos, format!("expireAfter: {e}"));
                None
            }
        }
    }

    /// A pin's `shard`: the meta pin role its options carry (the cluster
    /// shards the content, docs/sharding.md).
    fn shard(
        &mut self,
        shard: &Located<ShardSpec>,
        key: &CidKey,
        options: &PinOptions,
    ) -> Option<ShardRole> {
        let size = match &shard.value.size {
            ShardSize::Bytes(n) => Ok(*n),
            ShardSize::Text(t) => parse_size(t),
        };
        let size = match size {
            Ok(n) if n < MIN_SHARD_SIZE => {
                self.err(
                    shard.pos,
                    format!("shard.size {n} is below the smallest shard, 1MiB (a block can be that large)"),
                );
                return None;
            }
            Ok(n) => n,
            Err(e) => {
                self.err(shard.pos, format!("shard.size: {e}"));
                return None;
            }
        };
        if options.mode == PinMode::Direct {
            self.err(
                shard.pos,
                "shard needs mode recursive: a sharded pin keeps the whole content",
            );
            return None;
        }
        if options.replication.min == -1 {
            self.err(
                shard.pos,
                "shard with replication -1 (every peer) would put every shard everywhere: give a number",
            );
            return None;
        }
        Some(ShardRole {
            kind: ShardKind::Meta,
            reference: None,
            meta: key.to_string(),
            shard_size: size,
            max_depth: 0,
        })
    }

    fn dns_label(&mut self, what: &str, v: &Located<String>) -> bool {
        match check_dns_label(&v.value) {
            Ok(()) => true,
            Err(e) => {
                self.err(v.pos, format!("{what} {}: {e}", shown(&v.value)));
                false
            }
        }
    }
}

/// The PinSet `namespace/name` named by a request (a URL path, a
/// Kubernetes object), each part checked as a DNS-1123 label; the message
/// names the part that is wrong.
pub fn pinset_id(namespace: String, name: String) -> Result<PinSetId, String> {
    check_dns_label(&namespace).map_err(|e| format!("namespace {}: {e}", shown(&namespace)))?;
    check_dns_label(&name).map_err(|e| format!("name {}: {e}", shown(&name)))?;
    Ok(PinSetId::new(namespace, name))
}

/// DNS-1123 label: 1–63 characters of `a-z`, `0-9` and `-`, starting and
/// ending alphanumeric.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    let ok_inner = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    if !ok_inner || !edge(bytes[0]) || !edge(bytes[bytes.len() - 1]) {
        return Err(
            "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

fn check_name_segment(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(edge)
        && s.ends_with(edge)
}

fn check_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| check_dns_label(part).is_ok());
        if !ok {
            return Err("key prefix must be a DNS subdomain".into());
        }
    }
    if !check_name_segment(name) {
        return Err("key name must be 1 to 63 characters of letters, digits, '-', '_' or '.', starting and ending alphanumeric".into());
    }
    Ok(())
}

fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || check_name_segment(v) {
        Ok(())
    } else {
        Err("value must be empty or 1 to 63 characters of letters, digits, '-', '_' or '.', starting and ending alphanumeric".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load::{ConfigMapLists, Limits, load_paths, load_str, load_str_with};
    use std::fs;

    const LIST_DOC: &str = "apiVersion: pinfleet.io/v1alpha1\nkind: PinSet\nmetadata:\n  name: m\n  namespace: ns\nspec:\n  pinsFrom:\n";
    const CID: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";

    #[test]
    fn a_configmap_key_list_loads_from_memory_and_names_its_lines() {
        let doc = format!("{LIST_DOC}    - configMapKeyRef: {{name: lists, key: a.txt}}\n");
        let key = ("lists".to_string(), "a.txt".to_string());
        let mut maps = ConfigMapLists::new();
        maps.insert(key.clone(), Ok(format!("# c\n{CID} first\n")));
        let name = Path::new("obj");
        let sets = load_str_with(name, &doc, &Limits::default(), Some(&maps)).unwrap();
        assert_eq!(sets[0].pins.len(), 1);
        maps.insert(key.clone(), Ok(format!("{CID}\n\n  nope\n")));
        let e = load_str_with(name, &doc, &Limits::default(), Some(&maps)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("configmap ns/lists key a.txt:3:3: "),
            "{e}"
        );
        maps.insert(key, Err("the configmap does not exist".into()));
        let e = load_str_with(name, &doc, &Limits::default(), Some(&maps)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "obj:8:31: pinsFrom configmap ns/lists key a.txt: the configmap does not exist"
        );
        // Without ConfigMaps (a request body), the list is not resolved.
        let e = load_str(name, &doc, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("must be resolved"), "{e}");
    }

    #[test]
    fn a_file_manifest_names_exactly_one_list_and_no_configmap() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.yaml");
        let cases = [
            (
                "- configMapKeyRef: {name: lists, key: a}",
                "read by the kube source only",
            ),
            (
                "- {path: a.txt, configMapKeyRef: {name: l, key: a}}",
                "exactly one of",
            ),
            ("- {}", "exactly one of"),
            (
                "- configMapKeyRef: {name: Lists_, key: 'a b'}",
                "configMapKeyRef name",
            ),
        ];
        for (entry, want) in cases {
            fs::write(&file, format!("{LIST_DOC}    {entry}\n")).unwrap();
            let e = load_paths(&[&file], &Limits::default()).unwrap_err();
            assert!(e.to_string().contains(want), "{entry}: {e}");
        }
        fs::write(dir.path().join("a.txt"), format!("{CID}\n")).unwrap();
        fs::write(&file, format!("{LIST_DOC}    - path: a.txt\n")).unwrap();
        let loaded = load_paths(&[&file], &Limits::default()).unwrap();
        assert_eq!(loaded.pin_count(), 1);
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "arch-core", "x1", &"a".repeat(63)] {
            assert!(check_dns_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Arch", "a_b", "a.b", &"a".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        assert!(check_label_key("team").is_ok());
        assert!(check_label_key("pinfleet.io/force-prune").is_ok());
        assert!(check_label_key("bad key").is_err());
        assert!(check_label_key("/x").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_x").is_ok());
        assert!(check_label_value("-x").is_err());
    }
}
