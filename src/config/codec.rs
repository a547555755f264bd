//! Codecs: how each kind of value is read from `service.toml` (with the
//! message a user sees when it is wrong) and written back. A field of the
//! structs in `types` says `#[serde(with = "Interval")]`; every codec reads
//! through a [`toml::Value`] so that each wrong type is reported the same
//! way, "expected …, found …".
//!
//! This module owns each value's own checks; rules that span keys are
//! `load`'s, and nothing here knows where a value sits in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Value;

// Every use of the controller's types is here, so that moving them is a
// change to this block only (`types` takes `ReceiverKind` from here).
use crate::source::git::{Credentials, GitSource, redact};
pub(super) use crate::source::webhook::ReceiverKind;
use crate::source::webhook::{ReceiverSpecError, parse_receiver_spec};

use crate::manifest::duration::{format_duration, parse_duration};
use crate::manifest::{Limits, SHOWN_CHARS, capped, shown, suggest};

/// How one key's value is read from the file and written back. A field
/// says `#[serde(with = "SomeCodec")]`; the provided `serialize` and
/// `deserialize` go through a [`toml::Value`] so that every wrong type is
/// reported as "expected …, found …".
pub(super) trait Codec {
    /// The field's type.
    type Field;

    /// The field from a TOML value, or what is wrong with the value.
    fn read(value: &Value) -> Result<Self::Field, String>;

    /// The TOML value written for the field.
    fn write(field: &Self::Field) -> Value;

    /// For `#[serde(with)]`.
    fn serialize<S: Serializer>(field: &Self::Field, serializer: S) -> Result<S::Ok, S::Error> {
        Self::write(field).serialize(serializer)
    }

    /// For `#[serde(with)]`.
    fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self::Field, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::read(&value).map_err(D::Error::custom)
    }
}

/// Any string.
pub(super) struct Text;

impl Codec for Text {
    type Field = String;

    fn read(value: &Value) -> Result<String, String> {
        as_str(value).map(str::to_owned)
    }

    fn write(field: &String) -> Value {
        Value::String(field.clone())
    }
}

/// A whole number that fits `T`.
pub(super) struct Integer<T>(PhantomData<T>);

impl<T> Codec for Integer<T>
where
    T: TryFrom<i64> + Copy,
    i64: TryFrom<T>,
{
    type Field = T;

    fn read(value: &Value) -> Result<T, String> {
        let Some(i) = value.as_integer() else {
            return Err(format!("expected an integer, found {}", describe(value)));
        };
        T::try_from(i).map_err(|_| {
            let unsigned = T::try_from(-1).is_err();
            if unsigned && i < 0 {
                format!("{i} is negative; expected 0 or more")
            } else {
                format!("{i} is out of range")
            }
        })
    }

    /// TOML integers are 64-bit signed; a larger count (never read from a
    /// file) is written as the largest one.
    fn write(field: &T) -> Value {
        Value::Integer(i64::try_from(*field).unwrap_or(i64::MAX))
    }
}

/// A whole number of at least 1.
pub(super) struct AtLeastOne<T>(PhantomData<T>);

impl<T> Codec for AtLeastOne<T>
where
    T: TryFrom<i64> + Copy + PartialOrd + From<u8> + fmt::Display,
    i64: TryFrom<T>,
{
    type Field = T;

    fn read(value: &Value) -> Result<T, String> {
        let n = Integer::<T>::read(value)?;
        if n < T::from(1) {
            return Err(format!("{n} is too small; expected at least 1"));
        }
        Ok(n)
    }

    fn write(field: &T) -> Value {
        Integer::<T>::write(field)
    }
}

/// A Go-style duration longer than zero (`30s`, `5m`, `1h30m`, `1.5s`).
///
/// Not `humantime`: it writes `1s 500ms` and `1h 30m` rather than the Go
/// form the manifests and IPFS Cluster use, rejects Go's `μs` and a leading
/// `+`, takes fractions (`1.5s`, which this writes) only from its 2.3
/// release, accepts `d`/`w`/`M`/`y` units a manifest would reject, and its
/// errors do not quote the value.
pub(super) struct Interval;

impl Codec for Interval {
    type Field = Duration;

    fn read(value: &Value) -> Result<Duration, String> {
        let d = duration(value)?;
        if d.is_zero() {
            return Err("must be longer than 0s".into());
        }
        Ok(d)
    }

    fn write(field: &Duration) -> Value {
        Value::String(short_duration(*field))
    }
}

/// A Raft timing: a duration of whole milliseconds in openraft, so at
/// least 1ms.
pub(super) struct RaftTiming;

impl Codec for RaftTiming {
    type Field = Duration;

    fn read(value: &Value) -> Result<Duration, String> {
        let d = duration(value)?;
        if d < Duration::from_millis(1) {
            return Err(format!(
                "{} is too short; expected at least 1ms",
                format_duration(d)
            ));
        }
        Ok(d)
    }

    fn write(field: &Duration) -> Value {
        Value::String(short_duration(*field))
    }
}

/// Multiaddrs, at least `MIN` of them: one string or a list of strings.
pub(super) struct Addrs<const MIN: usize>;

impl<const MIN: usize> Codec for Addrs<MIN> {
    type Field = Vec<Multiaddr>;

    fn read(value: &Value) -> Result<Vec<Multiaddr>, String> {
        let addrs = each_string(value, "multiaddr strings", |text| {
            text.parse::<Multiaddr>()
                .map_err(|e| format!("invalid multiaddr {}: {e}", shown(text)))
        })?;
        if addrs.len() < MIN {
            return Err("must list at least one address".into());
        }
        Ok(addrs)
    }

    fn write(field: &Vec<Multiaddr>) -> Value {
        Value::Array(field.iter().map(|a| Value::String(a.to_string())).collect())
    }
}

/// libp2p peer ids (`12D3KooW…`), each checked.
pub(super) struct PeerIds;

impl Codec for PeerIds {
    type Field = Vec<PeerId>;

    fn read(value: &Value) -> Result<Vec<PeerId>, String> {
        each_string(value, "peer id strings", |text| {
            text.parse::<PeerId>()
                .ok()
                .filter(names_a_key)
                .ok_or_else(|| {
                    format!(
                        "invalid peer id {}: expected a libp2p peer id such as 12D3KooW…",
                        shown(text)
                    )
                })
        })
    }

    fn write(field: &Vec<PeerId>) -> Value {
        Value::Array(field.iter().map(|p| Value::String(p.to_string())).collect())
    }
}

/// True when `peer` can be the id of a key: an inlined public key
/// (`12D3KooW…`) or the SHA-256 of a larger one (`Qm…`). Any base58
/// string that decodes to a multihash parses as a `PeerId`; a typo in a
/// list of trusted peers must not pass as an id no peer can have.
fn names_a_key(peer: &PeerId) -> bool {
    let hash = peer.as_ref();
    match hash.code() {
        0x00 => libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).is_ok(),
        0x12 => hash.digest().len() == 32,
        _ => false,
    }
}

/// `ip:port`.
pub(super) struct SocketAddress;

impl Codec for SocketAddress {
    type Field = SocketAddr;

    fn read(value: &Value) -> Result<SocketAddr, String> {
        let text = as_str(value)?;
        text.trim().parse().map_err(|_| {
            format!(
                "invalid socket address {}: expected ip:port, e.g. 127.0.0.1:9094",
                shown(text)
            )
        })
    }

    fn write(field: &SocketAddr) -> Value {
        Value::String(field.to_string())
    }
}

/// `ip:port`, or an empty string for none.
pub(super) struct OptionalSocketAddress;

impl Codec for OptionalSocketAddress {
    type Field = Option<SocketAddr>;

    fn read(value: &Value) -> Result<Option<SocketAddr>, String> {
        if as_str(value)?.trim().is_empty() {
            return Ok(None);
        }
        SocketAddress::read(value).map(Some)
    }

    fn write(field: &Option<SocketAddr>) -> Value {
        Value::String(field.map(|a| a.to_string()).unwrap_or_default())
    }
}

/// An `http` or `https` base URL with a host and no query or fragment,
/// read without its trailing `/`.
pub(super) struct KuboUrl;

impl Codec for KuboUrl {
    type Field = String;

    fn read(value: &Value) -> Result<String, String> {
        let text = as_str(value)?;
        let url = reqwest::Url::parse(text.trim())
            .map_err(|e| format!("invalid url {}: {e}", shown(text)))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(format!(
                "invalid url {}: expected http://host:port or https://host:port",
                shown(text)
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "invalid url {}: a base url has no query or fragment",
                shown(text)
            ));
        }
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }

    fn write(field: &String) -> Value {
        Value::String(field.clone())
    }
}

/// A [`KuboUrl`]-checked URL, or `""` for none.
pub(super) struct OptionalUrl;

impl Codec for OptionalUrl {
    type Field = Option<String>;

    fn read(value: &Value) -> Result<Option<String>, String> {
        if as_str(value)?.trim().is_empty() {
            return Ok(None);
        }
        KuboUrl::read(value).map(Some)
    }

    fn write(field: &Option<String>) -> Value {
        Value::String(field.clone().unwrap_or_default())
    }
}

/// A table of strings; every bad value is named.
pub(super) struct Tags;

impl Codec for Tags {
    type Field = BTreeMap<String, String>;

    fn read(value: &Value) -> Result<BTreeMap<String, String>, String> {
        let Some(table) = value.as_table() else {
            return Err(format!(
                "expected a table of strings like {{ region = \"eu\" }}, found {}",
                describe(value)
            ));
        };
        let mut tags = BTreeMap::new();
        let mut bad = Vec::new();
        for (k, v) in table {
            match v.as_str() {
                Some(s) => {
                    tags.insert(k.clone(), s.to_owned());
                }
                None => bad.push(format!(
                    "{}: expected a string, found {}",
                    capped(k.clone(), SHOWN_CHARS),
                    describe(v)
                )),
            }
        }
        if bad.is_empty() {
            Ok(tags)
        } else {
            Err(bad.join("; "))
        }
    }

    fn write(field: &BTreeMap<String, String>) -> Value {
        Value::Table(
            field
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
}

/// Controller sources, each `dir:PATH` (non-empty), `git:SPEC` (parsed
/// as the controller does) or `kube[:NAMESPACE]` (a DNS label, so that a bad query key is caught at load).
/// Credentials never reach a message.
pub(super) struct Sources;

impl Codec for Sources {
    type Field = Vec<String>;

    fn read(value: &Value) -> Result<Vec<String>, String> {
        each_string(value, "source strings", check_source)
    }

    fn write(field: &Vec<String>) -> Value {
        Value::Array(field.iter().cloned().map(Value::String).collect())
    }
}

fn check_source(text: &str) -> Result<String, String> {
    if let Some(path) = text.strip_prefix("dir:") {
        if path.is_empty() {
            return Err("dir: source has an empty path".into());
        }
    } else if let Some(spec) = text.strip_prefix("git:") {
        GitSource::parse(
            spec,
            Path::new(""),
            Credentials::default(),
            Limits::default(),
        )
        .map_err(|e| e.to_string())?;
    } else if let Some(kube) = crate::source::kube::parse_spec(text) {
        kube?;
    } else {
        return Err(format!(
            "unsupported source {}: expected dir:PATH, git:URL[#ref=REF&path=SUBDIR] or kube[:NAMESPACE]",
            shown(&redact(text))
        ));
    }
    Ok(text.to_owned())
}

/// `true` or `false`.
pub(super) struct Flag;

impl Codec for Flag {
    type Field = bool;

    fn read(value: &Value) -> Result<bool, String> {
        value
            .as_bool()
            .ok_or_else(|| format!("expected a boolean, found {}", describe(value)))
    }

    fn write(field: &bool) -> Value {
        Value::Boolean(*field)
    }
}

/// A non-empty path.
pub(super) struct CacheDir;

impl Codec for CacheDir {
    type Field = PathBuf;

    fn read(value: &Value) -> Result<PathBuf, String> {
        let text = as_str(value)?;
        if text.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(PathBuf::from(text))
    }

    fn write(field: &PathBuf) -> Value {
        Value::String(field.to_string_lossy().into_owned())
    }
}

/// A file path where an empty string means none (`[api] tls_cert_file`,
/// `[tls] ca_file`).
pub(super) struct OptionalPath;

impl Codec for OptionalPath {
    type Field = Option<PathBuf>;

    fn read(value: &Value) -> Result<Option<PathBuf>, String> {
        let text = as_str(value)?;
        Ok((!text.trim().is_empty()).then(|| PathBuf::from(text)))
    }

    fn write(field: &Option<PathBuf>) -> Value {
        Value::String(
            field
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    }
}

/// Webhook receivers, each `KIND:NAME`: KIND one of github, gitlab,
/// generic; NAME of letters, digits, `-` and `_`.
pub(super) struct Webhooks;

impl Codec for Webhooks {
    type Field = Vec<(ReceiverKind, String)>;

    fn read(value: &Value) -> Result<Self::Field, String> {
        each_string(value, "\"KIND:NAME\" strings", parse_webhook)
    }

    fn write(field: &Self::Field) -> Value {
        Value::Array(
            field
                .iter()
                .map(|(kind, hook)| Value::String(format!("{}:{hook}", kind.name())))
                .collect(),
        )
    }
}

fn parse_webhook(text: &str) -> Result<(ReceiverKind, String), String> {
    parse_receiver_spec(text).map_err(|e| match e {
        ReceiverSpecError::UnknownKind(kind) => {
            let names = ReceiverKind::ALL.map(|(n, _)| n);
            unknown_message("webhook kind", &kind, &names)
        }
        other => other.to_string(),
    })
}

/// `unknown WHAT "got", did you mean "…"?` or the list of what is known.
pub(super) fn unknown_message(what: &str, got: &str, expected: &[&str]) -> String {
    match suggest(got, expected) {
        Some(s) => format!("unknown {what} {}, did you mean {s:?}?", shown(got)),
        None => format!(
            "unknown {what} {}, expected one of: {}",
            shown(got),
            expected.join(", ")
        ),
    }
}

/// The type of a value, and the value itself when it is short and scalar.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {}", shown(s)),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) => "an array".into(),
        Value::Table(_) => "a table".into(),
    }
}

/// A string value. Strings are never a type error, so `describe` (which
/// shows a string) is only reached for other types: safe for the secret.
pub(super) fn as_str(v: &Value) -> Result<&str, String> {
    v.as_str()
        .ok_or_else(|| format!("expected a string, found {}", describe(v)))
}

fn duration(v: &Value) -> Result<Duration, String> {
    let Some(text) = v.as_str() else {
        return Err(format!(
            "expected a duration string like \"30s\", found {}",
            describe(v)
        ));
    };
    parse_duration(text)
}

/// Durations written the short way users write them (`5m`, not `5m0s`).
fn short_duration(d: Duration) -> String {
    let mut s = format_duration(d);
    if s.ends_with("m0s") {
        s.truncate(s.len() - 2);
    }
    if s.ends_with("h0m") {
        s.truncate(s.len() - 2);
    }
    s
}

/// One string or a list of strings, each converted by `convert` (after
/// trimming); every bad item is named in the one message.
pub(super) fn each_string<T>(
    v: &Value,
    what: &str,
    convert: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let items: Vec<&Value> = match v {
        Value::String(_) => vec![v],
        Value::Array(a) => a.iter().collect(),
        other => {
            return Err(format!(
                "expected a list of {what}, found {}",
                describe(other)
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item.as_str() {
            Some(text) => match convert(text.trim()) {
                Ok(t) => out.push(t),
                Err(e) => bad.push(format!("[{i}]: {e}")),
            },
            None => bad.push(format!(
                "[{i}]: expected a string, found {}",
                describe(item)
            )),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::fixtures::*;
    use super::super::render::schema;
    use super::super::types::{IpfsBackendKind, ServiceConfig};
    use super::*;

    #[test]
    fn bad_secrets_are_rejected_without_echoing_them() {
        for (bad, why) in [
            ("abc123", "found 6 characters"),
            (&"zz".repeat(32), "non-hex"),
            (&"0".repeat(66), "found 66 characters"),
        ] {
            let p = problems(&format!("[cluster]\nsecret = \"{bad}\"\n"), &[]);
            assert_eq!(p.len(), 1);
            assert!(p[0].starts_with("cluster.secret: expected 64 hex"), "{p:?}");
            assert!(p[0].contains(why), "{p:?}");
            assert!(!p[0].contains(bad), "{p:?}");
        }
        let p = problems("[cluster]\nsecret = 7\n", &[]);
        assert_eq!(p, ["cluster.secret: expected a string, found integer 7"]);
        assert_eq!(format!("{:?}", secret()), "ClusterSecret(..)");
    }

    #[test]
    fn the_embedded_node_is_the_default_backend_and_its_listen_is_checked() {
        let cfg = parse(&minimal()).unwrap();
        assert_eq!(cfg.ipfs.backend, IpfsBackendKind::Embedded);
        assert_eq!(
            cfg.ipfs.embedded_listen,
            vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().unwrap()]
        );
        let toml = ServiceConfig::default_toml(SECRET);
        assert!(toml.contains("backend = \"embedded\""), "{toml}");
        assert!(
            toml.contains("embedded_listen = [\"/ip4/127.0.0.1/tcp/0\"]"),
            "{toml}"
        );

        let vars = [
            ("PINFLEET_IPFS_BACKEND", "none"),
            (
                "PINFLEET_IPFS_EMBEDDED_LISTEN",
                "/ip4/0.0.0.0/tcp/4001,/ip6/::/tcp/4001",
            ),
        ];
        let cfg = ServiceConfig::from_toml_str(&minimal(), file(), &env(&vars)).unwrap();
        assert_eq!(cfg.ipfs.backend, IpfsBackendKind::None);
        assert_eq!(cfg.ipfs.embedded_listen.len(), 2);

        let text = format!(
            "{}[ipfs]\nbackend = \"embeded\"\nembedded_listen = [\"nope\"]\n",
            minimal()
        );
        let mut p = problems(&text, &[]);
        p.sort();
        assert_eq!(
            p,
            [
                "ipfs.backend: unknown backend \"embeded\", did you mean \"embedded\"?",
                "ipfs.embedded_listen: [0]: invalid multiaddr \"nope\": invalid multiaddr",
            ]
        );
        assert_eq!(
            problems(&format!("{}[ipfs]\nembedded_listen = []\n", minimal()), &[]),
            ["ipfs.embedded_listen: must list at least one address"]
        );
    }

    #[test]
    fn swarm_defaults_to_private_in_a_file_and_public_bootstrap_addresses_parse() {
        assert_eq!(
            parse(&minimal()).unwrap().ipfs.swarm,
            crate::config::SwarmKind::Private
        );
        let cfg = parse(&format!(
            "{}[ipfs]\nswarm = \"public\"\ndelegated_routing = \"https://r.example/\"\n",
            minimal()
        ))
        .unwrap();
        assert_eq!(cfg.ipfs.swarm, crate::config::SwarmKind::Public);
        assert_eq!(
            cfg.ipfs.delegated_routing.as_deref(),
            Some("https://r.example")
        );
        assert_eq!(
            problems(&format!("{}[ipfs]\nswarm = \"open\"\n", minimal()), &[]),
            ["ipfs.swarm: unknown swarm \"open\", expected one of: private, public"]
        );
        for addr in crate::config::PUBLIC_BOOTSTRAP {
            let parsed: Multiaddr = addr.parse().unwrap();
            assert!(
                matches!(
                    parsed.iter().last(),
                    Some(libp2p::multiaddr::Protocol::P2p(_))
                ),
                "{addr}"
            );
        }
    }

    #[test]
    fn kubo_url_is_checked_and_normalised() {
        let with = |url: &str| parse(&format!("{}[ipfs]\nkubo_url = \"{url}\"\n", minimal()));
        assert_eq!(
            with("http://10.0.0.1:5001/").unwrap().ipfs.kubo_url,
            "http://10.0.0.1:5001"
        );
        assert_eq!(
            with("https://k.example/base/").unwrap().ipfs.kubo_url,
            "https://k.example/base"
        );
        for bad in [
            "127.0.0.1:5001",
            "ftp://x:5001",
            "http://x:5001/?a=b",
            "not a url",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn controller_section_is_parsed_and_checked() {
        let ok = parse(&format!(
            "{}[controller]\nsources = [\"dir:/srv/m\", \"git:file:///r.git#tag=v1&path=a\"]\n\
             interval = \"30s\"\nforce = true\nwebhooks = [\"github:main\"]\n",
            minimal()
        ))
        .unwrap();
        assert_eq!(ok.controller.sources.len(), 2);
        assert_eq!(ok.controller.interval, Duration::from_secs(30));
        assert!(ok.controller.force);
        assert_eq!(
            ok.controller.webhooks,
            vec![(ReceiverKind::GitHub, "main".to_string())]
        );
        assert_eq!(ok.controller.git_cache, PathBuf::from("git-cache"));
        // Round trip through the rendered file.
        assert_eq!(parse(&ok.to_toml()).unwrap(), ok);

        let p = problems(
            &format!(
                "{}[controller]\nsources = [\"ftp:x\", \"git:file:///r#bogus=1\", \"dir:\"]\n\
                 webhooks = [\"bitbucket:x\", \"github:bad name\"]\ninterval = \"0s\"\n",
                minimal()
            ),
            &[],
        );
        assert_eq!(p.len(), 3, "{p:?}");
        let sources = p
            .iter()
            .find(|m| m.starts_with("controller.sources:"))
            .unwrap();
        assert!(sources.contains("[0]: unsupported source"), "{sources}");
        assert!(
            sources.contains("[1]:") && sources.contains("bogus"),
            "{sources}"
        );
        assert!(
            sources.contains("[2]: dir: source has an empty path"),
            "{sources}"
        );
        let hooks = p
            .iter()
            .find(|m| m.starts_with("controller.webhooks:"))
            .unwrap();
        assert!(
            hooks.contains("unknown webhook kind \"bitbucket\""),
            "{hooks}"
        );
        assert!(hooks.contains("invalid webhook name"), "{hooks}");
        assert!(
            p.iter().any(|m| m.starts_with("controller.interval:")),
            "{p:?}"
        );

        let from_env = ServiceConfig::from_toml_str(
            &minimal(),
            file(),
            &env(&[
                ("PINFLEET_CONTROLLER_SOURCES", "dir:/a,dir:/b"),
                ("PINFLEET_CONTROLLER_FORCE", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(from_env.controller.sources, vec!["dir:/a", "dir:/b"]);
        assert!(from_env.controller.force);
        let p = problems(&minimal(), &[("PINFLEET_CONTROLLER_SOURCES", "nope")]);
        assert!(
            p[0].starts_with("controller.sources (from PINFLEET_CONTROLLER_SOURCES): [0]:"),
            "{p:?}"
        );
    }

    #[test]
    fn every_key_names_a_wrong_type_in_its_own_words() {
        // A field without a codec would get serde's "invalid type: …".
        for section in schema() {
            for (key, _) in &section.keys {
                let text = format!("[{}]\n{key} = 1979-05-27T07:32:00Z\n", section.name);
                let vars: &[(&str, &str)] = if key == "secret" {
                    &[]
                } else {
                    &[("PINFLEET_CLUSTER_SECRET", SECRET)]
                };
                let p = problems(&text, vars);
                let prefix = format!("{}.{key}: expected ", section.name);
                assert_eq!(p.len(), 1, "{p:?}");
                assert!(p[0].starts_with(&prefix), "{p:?}");
                assert!(
                    p[0].ends_with("found datetime 1979-05-27T07:32:00Z"),
                    "{p:?}"
                );
            }
        }
    }

    #[test]
    fn integers_out_of_range_and_write_clamped() {
        let text = format!(
            "{}replication_factor_min = 3000000000\n[consensus]\nmax_in_snapshot_log_to_keep = -2\n",
            minimal()
        );
        assert_eq!(
            problems(&text, &[]),
            [
                "cluster.replication_factor_min: 3000000000 is out of range",
                "consensus.max_in_snapshot_log_to_keep: -2 is negative; expected 0 or more",
            ]
        );
        assert_eq!(Integer::<u64>::write(&u64::MAX), Value::Integer(i64::MAX));
        assert_eq!(AtLeastOne::<usize>::write(&7), Value::Integer(7));
    }

    #[test]
    fn durations_keep_the_go_syntax_read_and_written() {
        for (text, d) in [
            ("1.5s", Duration::from_millis(1500)),
            ("1h30m", Duration::from_secs(5400)),
            ("+2m", Duration::from_secs(120)),
            ("1500μs", Duration::from_micros(1500)),
        ] {
            let cfg = parse(&format!(
                "{}[consensus]\nwrite_timeout = \"{text}\"\n",
                minimal()
            ))
            .unwrap();
            assert_eq!(cfg.consensus.write_timeout, d, "{text}");
        }
        for (d, written) in [
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(250), "250ms"),
        ] {
            assert_eq!(Interval::write(&d), Value::String(written.into()));
            assert_eq!(Interval::read(&Interval::write(&d)).unwrap(), d);
        }
        // Not Go's: days, and humantime's spaced form.
        for bad in ["1d", "1h 30m", "10"] {
            let text = format!("{}[controller]\ninterval = \"{bad}\"\n", minimal());
            let p = problems(&text, &[]);
            assert!(
                p[0].starts_with(&format!("controller.interval: invalid duration \"{bad}\"")),
                "{p:?}"
            );
        }
    }
}
