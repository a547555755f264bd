//! The published follower configuration (`follow.json`, issue 17): what a
//! collaborative cluster's operators hand out so that anyone can run a
//! follower — the cluster's name, the secret followers need to reach the
//! swarm, the trusted peers (ids and p2p addresses) whose signatures the
//! follower accepts, and the replication defaults.
//!
//! This module owns the file's format, its validation (every problem of a
//! file at once, each naming its field) and turning it into a follower's
//! `service.toml`. It fetches nothing (the CLI reads files and URLs) and
//! starts nothing.

use std::path::Path;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::{
    ClusterSecret, IDENTITY_FILE, Identity, InitError, InitReport, SERVICE_FILE, ServiceConfig,
    write_private_file,
};

/// The `format` of the files this version reads and writes.
pub const FOLLOW_FORMAT: &str = "pinfleet-follow/1";

/// Conventional file name of a published follower config.
pub const FOLLOW_FILE: &str = "follow.json";

/// One trusted peer of a published config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedPeer {
    /// Its peer id.
    pub id: PeerId,
    /// Where to reach it: each ends in `/p2p/<id>`.
    pub addrs: Vec<Multiaddr>,
}

/// A validated published follower config.
#[derive(Clone, PartialEq, Eq)]
pub struct FollowConfig {
    /// The cluster's name (`cluster.name`): what the feed is signed for.
    pub cluster: String,
    /// The cluster secret (the swarm's pnet key).
    pub secret: ClusterSecret,
    /// The trusted peers; never empty.
    pub trusted: Vec<TrustedPeer>,
    /// Default fewest replicas per pin; -1 is every peer.
    pub replication_factor_min: i32,
    /// Default most replicas per pin; -1 is every peer.
    pub replication_factor_max: i32,
}

/// Redacted: the secret must never reach a log.
impl std::fmt::Debug for FollowConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowConfig")
            .field("cluster", &self.cluster)
            .field("trusted", &self.trusted)
            .field("replication_factor_min", &self.replication_factor_min)
            .field("replication_factor_max", &self.replication_factor_max)
            .finish_non_exhaustive()
    }
}

/// Why a published follower config was refused.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Not JSON of the expected shape.
    #[error("not a published follower config")]
    Json(#[source] serde_json::Error),
    /// JSON of the right shape with invalid values: every problem, each
    /// naming its field (`trusted[1].addrs[0]: …`).
    #[error("invalid published follower config: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A cluster whose service config names no trusted peers.
    #[error(
        "a cluster with no trusted_peers cannot have followers: set cluster.trusted_peers first"
    )]
    NoTrustedPeers,
    /// An existing peer directory is not a follower of this cluster.
    #[error("{} is not a follower of cluster {cluster:?}: {reason}", path.display())]
    OtherCluster {
        /// Its service config.
        path: std::path::PathBuf,
        /// The published config's cluster.
        cluster: String,
        /// What differs (no secret is repeated).
        reason: String,
    },
}

/// The file as written: plain strings, checked by [`FollowConfig::parse`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowFile {
    format: String,
    cluster: String,
    secret: String,
    trusted: Vec<TrustedFile>,
    replication_factor_min: i32,
    replication_factor_max: i32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedFile {
    id: String,
    #[serde(default)]
    addrs: Vec<String>,
}

/// Each field of the file and what it holds, in file order (the reference
/// page, `config::reference`). A test checks it names exactly the fields.
pub(super) const FOLLOW_DOCS: &[(&str, &str)] = &[
    ("format", "The file format: `pinfleet-follow/1`."),
    (
        "cluster",
        "The cluster's name (its `cluster.name`): followers accept only a state feed signed for it.",
    ),
    (
        "secret",
        "The cluster secret (64 hex characters): the swarm's private network key.",
    ),
    (
        "trusted",
        "The trusted peers (the cluster's `cluster.trusted_peers`, at least one): a follower accepts the state they sign and bootstraps from their addresses.",
    ),
    ("trusted[].id", "The trusted peer's id (12D3KooW...)."),
    (
        "trusted[].addrs",
        "Its cluster multiaddrs, each ending in /p2p/ and its id; may be empty when the publishing peer knows none.",
    ),
    (
        "replication_factor_min",
        "The cluster's default fewest replicas per pin (-1: every peer), copied into the follower's `service.toml`.",
    ),
    (
        "replication_factor_max",
        "The cluster's default most replicas per pin (-1: every peer), copied likewise.",
    ),
];

/// An example file (placeholder values) for the reference page.
pub(super) fn sample_json() -> String {
    let id = "12D3KooWKDohRtJFWPuf8pD93WhZudVaw3h1XATGm4FYmrTp4jFK";
    let file = FollowFile {
        format: FOLLOW_FORMAT.to_string(),
        cluster: "mirrors".to_string(),
        secret: "<64 hex characters>".to_string(),
        trusted: vec![TrustedFile {
            id: id.to_string(),
            addrs: vec![format!("/dns4/peer1.example.org/tcp/9096/p2p/{id}")],
        }],
        replication_factor_min: 2,
        replication_factor_max: 3,
    };
    // Strings and integers only: encoding cannot fail.
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
    text.push('\n');
    text
}

/// The peer id an address ends in (`…/p2p/<id>`).
fn last_peer_id(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(id)) => Some(id),
        _ => None,
    }
}

impl FollowConfig {
    /// Parses and validates a published config; every problem is reported.
    pub fn parse(bytes: &[u8]) -> Result<Self, FollowError> {
        // The format first: a later version's file may have other fields.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(FollowError::Json)?;
        match value.get("format").and_then(serde_json::Value::as_str) {
            Some(FOLLOW_FORMAT) => {}
            Some(other) => {
                return Err(FollowError::Invalid(vec![format!(
                    "format: expected {FOLLOW_FORMAT:?}, found {}",
                    crate::manifest::shown(other)
                )]));
            }
            None => {
                return Err(FollowError::Invalid(vec![format!(
                    "format: missing (expected {FOLLOW_FORMAT:?})"
                )]));
            }
        }
        let file: FollowFile = serde_json::from_value(value).map_err(FollowError::Json)?;
        let mut problems = Vec::new();
        if file.cluster.trim().is_empty() {
            problems.push("cluster: the cluster's name is empty".to_string());
        }
        let secret = match ClusterSecret::parse_hex(&file.secret) {
            Ok(s) => Some(s),
            Err(reason) => {
                problems.push(format!("secret: {reason}"));
                None
            }
        };
        if file.trusted.is_empty() {
            problems.push("trusted: no trusted peers (at least one is needed)".to_string());
        }
        let mut trusted = Vec::new();
        for (i, t) in file.trusted.iter().enumerate() {
            let id = match t.id.parse::<PeerId>() {
                Ok(id) => Some(id),
                Err(_) => {
                    problems.push(format!(
                        "trusted[{i}].id: {} is not a peer id",
                        crate::manifest::shown(&t.id)
                    ));
                    None
                }
            };
            let mut addrs = Vec::new();
            for (j, a) in t.addrs.iter().enumerate() {
                let shown = crate::manifest::shown(a).to_string();
                let at = format!("trusted[{i}].addrs[{j}]");
                match a.parse::<Multiaddr>() {
                    Err(e) => problems.push(format!("{at}: {shown} is not a multiaddr: {e}")),
                    Ok(addr) => match (last_peer_id(&addr), id) {
                        (None, _) => {
                            problems.push(format!("{at}: {shown} does not end in /p2p/<peer id>"))
                        }
                        (Some(p), Some(id)) if p != id => problems.push(format!(
                            "{at}: {shown} ends in /p2p/{p}, not in this peer's id {id}"
                        )),
                        _ => addrs.push(addr),
                    },
                }
            }
            if let Some(id) = id {
                if trusted.iter().any(|p: &TrustedPeer| p.id == id) {
                    problems.push(format!("trusted[{i}].id: {id} is listed twice"));
                }
                trusted.push(TrustedPeer { id, addrs });
            }
        }
        if !file.trusted.is_empty() && file.trusted.iter().all(|t| t.addrs.is_empty()) {
            problems.push("trusted: no peer has an address, a follower could reach none".into());
        }
        if let Some(p) = super::load::replication_problem(
            file.replication_factor_min,
            file.replication_factor_max,
        ) {
            problems.push(format!("replication_factor_min: {p}"));
        }
        match secret {
            Some(secret) if problems.is_empty() => Ok(FollowConfig {
                cluster: file.cluster,
                secret,
                trusted,
                replication_factor_min: file.replication_factor_min,
                replication_factor_max: file.replication_factor_max,
            }),
            _ => Err(FollowError::Invalid(problems)),
        }
    }

    /// The published config of the cluster `config` belongs to, with the
    /// trusted peers' addresses from `addrs_of` (peers it knows no address
    /// of are listed without). Refused when the cluster names no trusted
    /// peers.
    pub fn publish(
        config: &ServiceConfig,
        trusted_peers: &[PeerId],
        addrs_of: impl Fn(&PeerId) -> Vec<Multiaddr>,
    ) -> Result<Self, FollowError> {
        if trusted_peers.is_empty() {
            return Err(FollowError::NoTrustedPeers);
        }
        let trusted = trusted_peers
            .iter()
            .map(|id| TrustedPeer {
                id: *id,
                addrs: addrs_of(id)
                    .into_iter()
                    .filter(|a| last_peer_id(a) == Some(*id))
                    .collect(),
            })
            .collect();
        Ok(FollowConfig {
            cluster: config.cluster.name.clone(),
            secret: config.cluster.secret,
            trusted,
            replication_factor_min: config.cluster.replication_factor_min,
            replication_factor_max: config.cluster.replication_factor_max,
        })
    }

    /// The file's text (pretty JSON, with the secret: publish it only to
    /// those who may join the swarm).
    pub fn to_json(&self) -> String {
        let file = FollowFile {
            format: FOLLOW_FORMAT.to_string(),
            cluster: self.cluster.clone(),
            secret: self.secret.to_hex(),
            trusted: self
                .trusted
                .iter()
                .map(|t| TrustedFile {
                    id: t.id.to_string(),
                    addrs: t.addrs.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            replication_factor_min: self.replication_factor_min,
            replication_factor_max: self.replication_factor_max,
        };
        // Strings and integers only: encoding cannot fail.
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The trusted peers' ids.
    pub fn trusted_ids(&self) -> Vec<PeerId> {
        self.trusted.iter().map(|t| t.id).collect()
    }

    /// Every trusted peer's address: a follower's bootstrap list.
    pub fn bootstrap(&self) -> Vec<Multiaddr> {
        self.trusted
            .iter()
            .flat_map(|t| t.addrs.iter().cloned())
            .collect()
    }

    /// A follower's `service.toml`: what `init` writes, as a follower of
    /// this cluster.
    pub fn service_config(&self) -> ServiceConfig {
        let mut config = super::new_cluster_config(self.secret);
        config.cluster.follower = true;
        config.cluster.name = self.cluster.clone();
        config.cluster.bootstrap = self.bootstrap();
        config.cluster.replication_factor_min = self.replication_factor_min;
        config.cluster.replication_factor_max = self.replication_factor_max;
        config.cluster.trusted_peers = self.trusted_ids();
        config
    }

    /// Ok when `config` (of the peer directory's `path`) is a follower of
    /// this cluster: follower, same name, same secret, same trusted peers.
    pub fn check_follower(&self, config: &ServiceConfig, path: &Path) -> Result<(), FollowError> {
        let differs = |reason: &str| FollowError::OtherCluster {
            path: path.to_path_buf(),
            cluster: self.cluster.clone(),
            reason: reason.to_string(),
        };
        if !config.cluster.follower {
            return Err(differs("it is not a follower (cluster.follower = false)"));
        }
        if config.cluster.name != self.cluster {
            return Err(differs(&format!(
                "it follows cluster {:?}",
                config.cluster.name
            )));
        }
        if config.cluster.secret != self.secret {
            return Err(differs("its cluster.secret is another one"));
        }
        let mut theirs = config.cluster.trusted_peers.clone();
        let mut ours = self.trusted_ids();
        theirs.sort();
        ours.sort();
        if theirs != ours {
            return Err(differs(
                "its cluster.trusted_peers are not the published trusted peers",
            ));
        }
        Ok(())
    }
}

/// `pinfleet init --follower`: creates `dir` with a fresh identity and a
/// follower's `service.toml` for `follow` (and `peername`). Without `force`
/// an existing identity or service config is an error and nothing is
/// written.
pub fn init_follower(
    dir: &Path,
    force: bool,
    follow: &FollowConfig,
    peername: Option<&str>,
) -> Result<InitReport, InitError> {
    let identity_path = dir.join(IDENTITY_FILE);
    let service_path = dir.join(SERVICE_FILE);
    if !force {
        for path in [&identity_path, &service_path] {
            if path.exists() {
                return Err(InitError::Exists { path: path.clone() });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| InitError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut config = follow.service_config();
    if let Some(name) = peername {
        config.cluster.peername = name.to_owned();
    }
    write_private_file(&service_path, config.to_toml().as_bytes(), force).map_err(|source| {
        InitError::Write {
            path: service_path.clone(),
            source,
        }
    })?;
    let identity = Identity::generate();
    identity.save(&identity_path, force)?;
    Ok(InitReport {
        peer_id: identity.peer_id(),
        identity_path,
        service_path,
        wrote_service: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn file(secret: &str, trusted: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "format": FOLLOW_FORMAT, "cluster": "mirror", "secret": secret,
            "trusted": trusted, "replication_factor_min": -1, "replication_factor_max": -1,
        })
        .to_string()
        .into_bytes()
    }

    fn problems(bytes: &[u8]) -> String {
        match FollowConfig::parse(bytes) {
            Err(FollowError::Invalid(p)) => p.join("\n"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_published_config_round_trips_and_becomes_a_follower_config() {
        let id = peer();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{id}").parse().unwrap();
        let text = file(
            SECRET,
            serde_json::json!([{"id": id.to_string(), "addrs": [addr.to_string()]}]),
        );
        let parsed = FollowConfig::parse(&text).unwrap();
        assert_eq!(parsed.trusted_ids(), vec![id]);
        assert_eq!(
            FollowConfig::parse(parsed.to_json().as_bytes()).unwrap(),
            parsed
        );
        let config = parsed.service_config();
        assert!(config.cluster.follower);
        assert_eq!(config.cluster.name, "mirror");
        assert_eq!(config.cluster.secret.to_hex(), SECRET);
        assert_eq!(config.cluster.bootstrap, vec![addr]);
        parsed.check_follower(&config, Path::new("f")).unwrap();
        let mut leader = config.clone();
        leader.cluster.follower = false;
        let err = parsed.check_follower(&leader, Path::new("f")).unwrap_err();
        assert!(err.to_string().contains("not a follower"), "{err}");
        assert!(!format!("{parsed:?}").contains(SECRET));
    }

    #[test]
    fn every_bad_field_is_named_and_the_secret_never_repeated() {
        let id = peer();
        let other = peer();
        let text = file(
            "abc123",
            serde_json::json!([
                {"id": "not-a-peer", "addrs": []},
                {"id": id.to_string(), "addrs": [
                    "/ip4/10.0.0.1/tcp/4001",
                    format!("/ip4/10.0.0.1/tcp/4001/p2p/{other}"),
                    "nonsense",
                ]},
            ]),
        );
        let p = problems(&text);
        assert!(p.contains("secret: expected 64 hex characters"), "{p}");
        assert!(!p.contains("abc123"), "{p}");
        assert!(
            p.contains("trusted[0].id: \"not-a-peer\" is not a peer id"),
            "{p}"
        );
        assert!(
            p.contains("trusted[1].addrs[0]") && p.contains("does not end in /p2p/"),
            "{p}"
        );
        assert!(
            p.contains("trusted[1].addrs[1]") && p.contains("not in this peer's id"),
            "{p}"
        );
        assert!(
            p.contains("trusted[1].addrs[2]") && p.contains("is not a multiaddr"),
            "{p}"
        );
    }

    #[test]
    fn an_empty_trusted_list_or_a_wrong_format_is_refused() {
        let p = problems(&file(SECRET, serde_json::json!([])));
        assert!(p.contains("trusted: no trusted peers"), "{p}");
        let mut v: serde_json::Value =
            serde_json::from_slice(&file(SECRET, serde_json::json!([]))).unwrap();
        v["format"] = "pinfleet-follow/9".into();
        let p = problems(v.to_string().as_bytes());
        assert!(p.contains("format: expected \"pinfleet-follow/1\""), "{p}");
        let err = FollowConfig::parse(b"not json").unwrap_err();
        assert!(matches!(err, FollowError::Json(_)), "{err:?}");
        let p = problems(b"{\"format\": 1}");
        assert!(p.contains("format: missing"), "{p}");
    }

    #[test]
    fn publishing_needs_trusted_peers_and_keeps_only_their_own_addresses() {
        let config = ServiceConfig::new(ClusterSecret::parse_hex(SECRET).unwrap());
        let err = FollowConfig::publish(&config, &[], |_| Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("set cluster.trusted_peers first"),
            "{err}"
        );
        let (a, b) = (peer(), peer());
        let own: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{a}").parse().unwrap();
        let wrong: Multiaddr = format!("/ip4/127.0.0.1/tcp/2/p2p/{b}").parse().unwrap();
        let published = FollowConfig::publish(&config, &[a, b], |id| {
            if *id == a {
                vec![own.clone(), wrong.clone()]
            } else {
                Vec::new()
            }
        })
        .unwrap();
        assert_eq!(published.trusted[0].addrs, vec![own]);
        assert!(published.trusted[1].addrs.is_empty());
        assert_eq!(published.cluster, "pinfleet");
        FollowConfig::parse(published.to_json().as_bytes()).unwrap();
    }

    #[test]
    fn init_follower_writes_a_follower_and_refuses_an_existing_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let id = peer();
        let follow = FollowConfig::parse(&file(
            SECRET,
            serde_json::json!([{"id": id.to_string(), "addrs": [format!("/ip4/127.0.0.1/tcp/1/p2p/{id}")]}]),
        ))
        .unwrap();
        let report = init_follower(tmp.path(), false, &follow, Some("f0")).unwrap();
        let config = ServiceConfig::load_with_env(&report.service_path, &[]).unwrap();
        follow
            .check_follower(&config, &report.service_path)
            .unwrap();
        assert_eq!(config.cluster.peername, "f0");
        let err = init_follower(tmp.path(), false, &follow, None).unwrap_err();
        assert!(matches!(err, InitError::Exists { .. }), "{err:?}");
    }

    #[test]
    fn the_reference_docs_name_exactly_the_fields_of_the_file() {
        let sample: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        let mut fields = Vec::new();
        for (key, value) in sample.as_object().unwrap() {
            fields.push(key.clone());
            if let Some(first) = value.as_array().and_then(|a| a.first()) {
                for inner in first.as_object().into_iter().flatten() {
                    fields.push(format!("{key}[].{}", inner.0));
                }
            }
        }
        // Compared as sets: serde_json's map may sort its keys.
        let mut documented: Vec<&str> = FOLLOW_DOCS.iter().map(|(f, _)| *f).collect();
        documented.sort_unstable();
        fields.sort_unstable();
        assert_eq!(documented, fields);
        // The sample is a file of the current format.
        assert_eq!(sample["format"], FOLLOW_FORMAT);
    }
}
