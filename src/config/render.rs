//! Writing `service.toml`: the config is serialized into a `toml_edit`
//! document (so the keys, their order and their values come from the
//! structs and their `Default`s), then every section and key gets its
//! comment from [`DOCS`].
//!
//! This module owns the written layout, the documentation a user reads in
//! the file, and the [`schema`] (sections, keys and their kinds) read off
//! the written defaults; it does not read files or check values.

use std::sync::LazyLock;

use toml_edit::{DocumentMut, Item};

use super::types::ServiceConfig;

/// Written at the top of every file.
const HEADER: &str = "\
# pinfleet service configuration, shared by every peer of a cluster.
# Every key but cluster.secret is optional; the values below are the defaults.
# Any key can be overridden by an environment variable PINFLEET_<SECTION>_<KEY>,
# e.g. PINFLEET_API_LISTEN=127.0.0.1:0 (lists comma-separated, tables as k=v,k=v,
# or k=v;k=v when a value holds commas).
# Durations are Go-style: 250ms, 30s, 5m, 1h30m.
";

/// A key and the comment above it.
pub(super) type KeyDoc = (&'static str, &'static str);

/// A section, the comment above it, and its keys.
pub(super) type SectionDoc = (&'static str, &'static str, &'static [KeyDoc]);

/// The comment above each section and each key, in file order. A test
/// checks that it names exactly the keys the structs have.
pub(super) const DOCS: &[SectionDoc] = &[
    (
        "cluster",
        "Cluster membership, transport and replication defaults.",
        &[
            (
                "name",
                "The cluster's name; followers refuse a feed signed for another name. Set it once for a collaborative cluster.",
            ),
            (
                "follower",
                "true: this peer is a follower (docs/collaborative.md): it pins what the trusted peers sign, never takes part in Raft, and refuses every write. Written by pinfleet init --follower.",
            ),
            (
                "peername",
                "Human-readable name of this peer; per peer, so usually set with PINFLEET_CLUSTER_PEERNAME.",
            ),
            (
                "secret",
                "Private network key shared by every peer: 64 hex characters (32 bytes). Required.",
            ),
            (
                "listen_multiaddress",
                "libp2p multiaddrs to listen on for cluster traffic (at least one).",
            ),
            (
                "bootstrap",
                "Multiaddrs of peers to join on start, usually ending in /p2p/<peer id>.",
            ),
            (
                "trusted_peers",
                "Peer ids (12D3KooW...) of the trusted peers: only they write, change the membership, run gc and vote in Raft; a peer not listed that joins is refused. Empty (the default): every peer holding the secret is trusted. Set it for a collaborative cluster; followers require it.",
            ),
            (
                "replication_factor_min",
                "Default fewest peers that pin each CID: -1 (every peer) or at least 1.",
            ),
            (
                "replication_factor_max",
                "Default most peers that pin each CID: -1 (every peer) or at least replication_factor_min.",
            ),
            (
                "state_sync_interval",
                "How often each peer compares the pins it should hold with what its IPFS node holds, re-pinning what was removed behind the cluster's back and unpinning what it no longer should (the pin tracker's full recheck).",
            ),
        ],
    ),
    (
        "consensus",
        "Raft consensus.",
        &[
            (
                "heartbeat_interval",
                "Time between leader heartbeats; must be below election_timeout_min.",
            ),
            (
                "election_timeout_min",
                "Shortest wait without a heartbeat before a follower calls an election.",
            ),
            (
                "election_timeout_max",
                "Longest such wait (each wait is random between min and max); above election_timeout_min.",
            ),
            (
                "snapshot_logs_since_last",
                "Take a state snapshot after this many log entries since the last one (at least 1).",
            ),
            (
                "max_in_snapshot_log_to_keep",
                "Log entries kept after a snapshot so that lagging peers can catch up from the log.",
            ),
            (
                "write_timeout",
                "How long a write waits to be committed before it fails.",
            ),
            (
                "batch_max_pins",
                "Most pins in one log entry (at least 1); larger batches ingest faster. An entry also holds at most 1 MiB encoded, whatever this says.",
            ),
            (
                "append_max_bytes",
                "Most bytes of log entries in one replication message (at least 1; a larger entry still goes, alone). A message must reach a follower within heartbeat_interval: for a follower that missed one, fewer go next time.",
            ),
            (
                "append_max_entries",
                "Most log entries in one replication message (at least 1).",
            ),
        ],
    ),
    (
        "api",
        "REST API (IPFS Cluster compatible).",
        &[
            (
                "listen",
                "Socket address the REST API listens on (ip:port; port 0 picks a free port). A non-loopback address needs basic_auth_credentials (or allow_unauthenticated_remote).",
            ),
            (
                "basic_auth_credentials",
                "Users and their roles: { alice = \"admin:<hash>\", ci = \"writer:<hash>\" }; roles reader, writer, admin; the hash from `pinfleet passwd`. Empty: no authentication.",
            ),
            ("token_ttl", "How long a token from POST /token is valid."),
            (
                "allow_unauthenticated_remote",
                "Serve a non-loopback listen address without users: whoever reaches it is admin. Only behind something that authenticates.",
            ),
            (
                "public_names",
                "Host names the API is reached by, besides localhost and IP addresses (a request naming another host is refused: no DNS rebinding).",
            ),
            (
                "cors_allowed_origins",
                "Origins allowed to call the API from a browser, e.g. [\"https://dash.example.org\"] or [\"*\"]; empty refuses cross-origin requests.",
            ),
            (
                "cors_allowed_methods",
                "HTTP methods allowed to those origins.",
            ),
            (
                "cors_allow_credentials",
                "Let browsers send credentials (Authorization, cookies) cross-origin; not with \"*\".",
            ),
            (
                "cors_max_age",
                "How long a browser may cache a preflight answer.",
            ),
            (
                "max_upload_bytes",
                "Largest POST /add upload in bytes (at least 1; larger uploads get 413 and leave nothing behind).",
            ),
            (
                "max_pinset_body_bytes",
                "Largest PUT or PATCH /pinsets/NS/NAME body in bytes (at least 1; larger bodies get 413).",
            ),
            (
                "max_concurrent_pinset_writes",
                "Most PUT or PATCH /pinsets/NS/NAME requests served at once (at least 1); others wait up to a second, then get 503 with Retry-After.",
            ),
            (
                "read_timeout",
                "How long a client may take to send its request headers, and between two pieces of an upload or PinSet body (then 408); responses are never cut. Also how long a kept-alive connection may stay idle between requests.",
            ),
            (
                "max_connections",
                "Most connections served at once (at least 1; keep it below the process's open-file limit). One more waits up to 250 ms for a free one, then gets 503 with Retry-After and is closed.",
            ),
            (
                "tls_cert_file",
                "PEM certificate chain (leaf first) to serve HTTPS with; empty serves plain HTTP. Set together with tls_key_file; a relative path is under the peer directory. Reloaded on SIGHUP and when the file changes.",
            ),
            (
                "tls_key_file",
                "PEM private key (PKCS#8, RSA or SEC1) of tls_cert_file.",
            ),
            (
                "ui",
                "Serve the web dashboard at /ui/ on this listener (same users and roles as the API); false answers 404 there.",
            ),
        ],
    ),
    (
        "pinsvc",
        "The IPFS Pinning Service API (GET/POST /pins, /pins/REQUESTID), served with [api]'s TLS certificate when set.",
        &[
            (
                "listen",
                "Socket address (ip:port) it listens on; empty disables it. Served only when tokens are set; a non-loopback address needs tokens.",
            ),
            (
                "tokens",
                "Bearer tokens: { NAME = \"[ROLE:]TOKEN\" }, at least 16 characters each; ROLE reader (list and read only), writer (the default) or admin. A token sees and changes only its own requests, whose pins are owned by pinsvc:NAME. Env: PINFLEET_PINSVC_TOKENS=\"kubo=writer:TOKEN,app=reader:TOKEN2\".",
            ),
        ],
    ),
    (
        "ipfs",
        "The IPFS node this peer pins on.",
        &[
            (
                "backend",
                "\"embedded\" (an IPFS node inside this peer, data under <peer dir>/ipfs), \"kubo\" (Kubo HTTP RPC at kubo_url) or \"none\" (track pins without an IPFS node).",
            ),
            (
                "kubo_url",
                "Base URL of the Kubo RPC API, used when backend = \"kubo\".",
            ),
            (
                "embedded_listen",
                "Multiaddrs the embedded node's swarm listens on, used when backend = \"embedded\"; other peers' nodes must reach one (e.g. /ip4/0.0.0.0/tcp/4001 and /ip4/0.0.0.0/udp/4001/quic-v1 across machines).",
            ),
            (
                "swarm",
                "\"public\": the embedded node is on the IPFS network (fetches from and serves to Kubo and any IPFS node, DHT, origins outside the cluster); \"private\": only cluster members' nodes connect (the cluster secret as pnet key). Cluster RPC stays private either way. A file without it is private; pinfleet init writes public. See docs/ipfs.md.",
            ),
            (
                "bootstrap",
                "Multiaddrs (with /p2p/) the public node joins the DHT through; pinfleet init writes the public IPFS bootstrap list; empty keeps the node off the DHT beyond the peers it meets.",
            ),
            (
                "delegated_routing",
                "Optional delegated routing endpoint (HTTP /routing/v1, e.g. https://delegated-ipfs.dev) asked for providers as well as the DHT; empty for none.",
            ),
            (
                "relay_client",
                "Public node behind NAT: reserve a slot on circuit relays and upgrade to a direct connection by hole punching.",
            ),
            (
                "dht_client",
                "Only query the DHT, never answer it (Kubo's dhtclient), for a node other IPFS nodes cannot dial; its pinned roots are still announced.",
            ),
            (
                "max_connections",
                "Most connections the public node holds at once (incoming plus outgoing); further ones are refused.",
            ),
            (
                "storage_max",
                "Most bytes the embedded node stores: bytes, or with a unit (\"100MiB\", \"1GiB\", \"500MB\"); empty for no limit. The informer reports free space as this minus what is stored (allocation and sharded adds choose peers by it), and blocks another peer pushes past it (a sharded add) are refused. Used when backend = \"embedded\".",
            ),
        ],
    ),
    (
        "informer",
        "Metrics this peer reports for allocation.",
        &[
            (
                "tags",
                "Free-form string tags for tag-based allocation, e.g. { region = \"eu\", group = \"a\" }.",
            ),
            (
                "interval",
                "How often this peer reports its metrics (free space, pin queue, tags) to the others; they expire after two intervals.",
            ),
        ],
    ),
    (
        "controller",
        "GitOps controller; runs when sources are listed, and only the Raft leader's acts.",
        &[
            (
                "sources",
                "Manifest sources: \"dir:PATH\", \"git:URL#ref=REF&path=SUBDIR\" or \"kube[:NAMESPACE]\"; empty runs no controller.",
            ),
            (
                "interval",
                "How often each source is re-reconciled (drift repair) and git sources polled.",
            ),
            (
                "force",
                "Lift the prune guard (releasing more than half a PinSet, or a whole one).",
            ),
            (
                "git_cache",
                "Cache directory of git sources; a relative path is under the peer directory.",
            ),
            (
                "webhooks",
                "Webhook receivers \"KIND:NAME\" (github, gitlab, generic) at POST /hooks/NAME; secret from PINFLEET_WEBHOOK_SECRET.",
            ),
            (
                "webhook_listen",
                "Socket address (ip:port) of a listener serving only the webhook receivers, so the REST API need not be exposed; empty: they are served on the REST listener.",
            ),
        ],
    ),
    (
        "tls",
        "Trust for this peer's outgoing HTTPS (Kubo, forges, other peers' APIs): the public web's root CAs plus ca_file.",
        &[(
            "ca_file",
            "PEM file of extra CA certificates to trust (a private CA, or the one that signed [api] tls_cert_file); empty adds none. A relative path is under the peer directory.",
        )],
    ),
];

impl ServiceConfig {
    /// The full file with every key set to its default and `secret_hex`
    /// written as is (not checked here), each key with a comment above it.
    /// Loading it back gives `ServiceConfig::new(secret)`.
    pub fn default_toml(secret_hex: &str) -> String {
        Self::unset().render(secret_hex)
    }

    /// This config as a commented file, every key written out.
    pub fn to_toml(&self) -> String {
        self.render(&self.cluster.secret.to_hex())
    }

    fn render(&self, secret_hex: &str) -> String {
        let mut doc = document(self);
        if let Some(secret) = doc
            .get_mut("cluster")
            .and_then(Item::as_table_mut)
            .and_then(|t| t.get_mut("secret"))
        {
            *secret = toml_edit::value(secret_hex);
        }
        for (section, item) in doc.iter_mut() {
            let Some(table) = item.as_table_mut() else {
                continue;
            };
            let Some((_, about, keys)) = DOCS.iter().find(|(name, ..)| *name == section.get())
            else {
                continue;
            };
            table.decor_mut().set_prefix(format!("\n# {about}\n"));
            for (mut key, _) in table.iter_mut() {
                if let Some((_, about)) = keys.iter().find(|(name, _)| *name == key.get()) {
                    key.leaf_decor_mut().set_prefix(format!("# {about}\n"));
                }
            }
        }
        format!("{HEADER}{doc}")
    }
}

/// `config` as a document without comments: one `[section]` table per
/// struct, its keys in field order (`cluster.secret` written empty, see
/// `types`).
pub(super) fn document(config: &ServiceConfig) -> DocumentMut {
    // Every codec writes a string, an i64, a bool, an array of strings or a
    // table of strings, all of which TOML holds, so this cannot fail.
    let mut doc = toml_edit::ser::to_document(config)
        .expect("every service config value is a TOML string, integer, bool, array or table");
    // Sections come out as inline tables (`cluster = { … }`).
    for (_, item) in doc.iter_mut() {
        let inline = std::mem::take(item);
        *item = match inline.into_table() {
            Ok(table) => Item::Table(table),
            Err(other) => other,
        };
    }
    doc
}

/// What a key holds, as far as an environment override needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A string (durations, addresses, names).
    Text,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Bool,
    /// A list of strings.
    List,
    /// A table of strings.
    Tags,
}

/// One section of the file: its name and its keys, in file order.
#[derive(Debug)]
pub(super) struct Section {
    /// The table's name.
    pub name: String,
    /// Each key with the kind of its default value.
    pub keys: Vec<(String, Kind)>,
}

impl Section {
    /// The kind of `key`, if this section has it.
    pub fn kind(&self, key: &str) -> Option<Kind> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, kind)| *kind)
    }

    /// Every key name, in file order.
    pub fn key_names(&self) -> Vec<&str> {
        self.keys.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Every section and key of the file in file order, read off the
/// serialized defaults so that it cannot drift from the structs.
pub(super) fn schema() -> &'static [Section] {
    static SCHEMA: LazyLock<Vec<Section>> = LazyLock::new(|| {
        let defaults = document(&ServiceConfig::unset());
        defaults
            .iter()
            .map(|(name, item)| Section {
                name: name.to_owned(),
                keys: item
                    .as_table_like()
                    .map(|t| t.iter().map(|(k, v)| (k.to_owned(), kind_of(v))).collect())
                    .unwrap_or_default(),
            })
            .collect()
    });
    &SCHEMA
}

fn kind_of(item: &toml_edit::Item) -> Kind {
    match item.as_value() {
        Some(toml_edit::Value::Integer(_)) => Kind::Integer,
        Some(toml_edit::Value::Boolean(_)) => Kind::Bool,
        Some(toml_edit::Value::Array(_)) => Kind::List,
        Some(toml_edit::Value::InlineTable(_)) => Kind::Tags,
        _ if item.is_table() => Kind::Tags,
        _ => Kind::Text,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::Multiaddr;

    use super::super::codec::ReceiverKind;
    use super::super::load::fixtures::*;
    use super::super::types::{ClusterSecret, IpfsBackendKind};
    use super::*;

    #[test]
    fn default_toml_parses_back_to_the_defaults() {
        let text = ServiceConfig::default_toml(SECRET);
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed, ServiceConfig::new(secret()));
        // And the documented defaults are what the brief promises.
        assert_eq!(parsed.cluster.state_sync_interval, Duration::from_secs(30));
        assert_eq!(
            parsed.cluster.listen_multiaddress,
            vec!["/ip4/0.0.0.0/tcp/9096".parse::<Multiaddr>().unwrap()]
        );
        assert_eq!(parsed.api.listen, "127.0.0.1:9094".parse().unwrap());
        assert_eq!(parsed.ipfs.kubo_url, "http://127.0.0.1:5001");
        assert_eq!(parsed.cluster.secret.bytes()[..2], [0x00, 0x11]);
        assert!(text.contains("state_sync_interval = \"30s\""), "{text}");
        assert!(text.contains("heartbeat_interval = \"250ms\""), "{text}");
    }

    #[test]
    fn every_key_is_written_with_a_comment_above_it() {
        let text = ServiceConfig::default_toml(SECRET);
        let lines: Vec<&str> = text.lines().collect();
        for section in schema() {
            assert!(lines.contains(&format!("[{}]", section.name).as_str()));
            for (key, _) in &section.keys {
                let at = lines
                    .iter()
                    .position(|l| l.starts_with(&format!("{key} = ")))
                    .unwrap_or_else(|| panic!("{key} missing"));
                assert!(lines[at - 1].starts_with("# "), "{key}");
            }
        }
    }

    #[test]
    fn a_changed_config_round_trips_through_to_toml() {
        let mut cfg = ServiceConfig::new(ClusterSecret::random());
        cfg.cluster.peername = "peer \"one\"".into();
        cfg.cluster.bootstrap = vec![
            "/ip4/10.0.0.1/tcp/9096".parse().unwrap(),
            "/dns4/a.example/tcp/9096".parse().unwrap(),
        ];
        cfg.cluster.replication_factor_min = 2;
        cfg.cluster.replication_factor_max = 3;
        cfg.cluster.state_sync_interval = Duration::from_secs(5400);
        cfg.consensus.write_timeout = Duration::from_millis(1500);
        cfg.api.listen = "[::1]:0".parse().unwrap();
        cfg.ipfs.backend = IpfsBackendKind::Kubo;
        cfg.ipfs.kubo_url = "https://kubo.example:5001/prefix".into();
        cfg.informer.tags = [("region", "eu"), ("odd key", "x=y")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(parse(&cfg.to_toml()).unwrap(), cfg);
    }

    #[test]
    fn the_comments_name_exactly_the_keys_of_the_structs_in_their_order() {
        let documented: Vec<(&str, Vec<&str>)> = DOCS
            .iter()
            .map(|(section, _, keys)| (*section, keys.iter().map(|(k, _)| *k).collect()))
            .collect();
        let actual: Vec<(&str, Vec<&str>)> = schema()
            .iter()
            .map(|s| (s.name.as_str(), s.key_names()))
            .collect();
        assert_eq!(documented, actual);
    }

    /// Every key set away from its default, so that each codec's written
    /// form must read back to the same value.
    fn every_key_changed() -> ServiceConfig {
        let mut cfg = ServiceConfig::new(ClusterSecret::random());
        let c = &mut cfg.cluster;
        c.name = "mirror 'two'".into();
        c.follower = true;
        c.peername = "peer 'one' \"1\"".into();
        c.listen_multiaddress = vec![
            "/ip6/::1/tcp/1".parse().unwrap(),
            "/ip4/127.0.0.1/udp/2/quic-v1".parse().unwrap(),
        ];
        c.bootstrap = vec!["/dns4/a.example/tcp/9096".parse().unwrap()];
        c.trusted_peers = (0..2)
            .map(|_| {
                libp2p::identity::Keypair::generate_ed25519()
                    .public()
                    .to_peer_id()
            })
            .collect();
        c.replication_factor_min = 2;
        c.replication_factor_max = 5;
        c.state_sync_interval = Duration::from_millis(90_500);
        let k = &mut cfg.consensus;
        k.heartbeat_interval = Duration::from_micros(1500);
        k.election_timeout_min = Duration::from_millis(300);
        k.election_timeout_max = Duration::from_secs(3600 * 25);
        k.snapshot_logs_since_last = 1;
        k.max_in_snapshot_log_to_keep = 0;
        k.write_timeout = Duration::from_nanos(1);
        k.batch_max_pins = 1;
        k.append_max_bytes = 1;
        k.append_max_entries = 1;
        cfg.api.listen = "[::]:65535".parse().unwrap();
        let hash = crate::auth::hash_password("pw").unwrap();
        cfg.api.basic_auth_credentials = [
            ("ann", format!("admin:{hash}")),
            ("ci.bot", format!("writer:{hash}")),
        ]
        .into_iter()
        .map(|(u, c)| (u.to_owned(), crate::auth::Credential::parse(&c).unwrap()))
        .collect();
        cfg.api.token_ttl = Duration::from_secs(90);
        cfg.api.allow_unauthenticated_remote = true;
        cfg.api.public_names = vec!["pins.example.org".into(), "h".into()];
        cfg.api.cors_allowed_origins = vec!["https://dash.example.org".into()];
        cfg.api.cors_allowed_methods = vec!["GET".into()];
        cfg.api.cors_allow_credentials = true;
        cfg.api.cors_max_age = Duration::from_secs(5);
        cfg.api.tls_cert_file = Some("tls/cert chain.pem".into());
        cfg.api.tls_key_file = Some("/etc/pinfleet/key.pem".into());
        cfg.api.ui = false;
        cfg.tls.ca_file = Some("ca.pem".into());
        cfg.ipfs.backend = IpfsBackendKind::None;
        cfg.ipfs.kubo_url = "https://k.example:5001/a/b".into();
        cfg.ipfs.embedded_listen = vec!["/ip4/0.0.0.0/tcp/4001".parse().unwrap()];
        cfg.ipfs.swarm = crate::config::SwarmKind::Public;
        cfg.ipfs.bootstrap = vec![
            "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWKDohRtJFWPuf8pD93WhZudVaw3h1XATGm4FYmrTp4jFK"
                .parse()
                .unwrap(),
        ];
        cfg.ipfs.delegated_routing = Some("https://routing.example.org".into());
        cfg.ipfs.relay_client = true;
        cfg.ipfs.dht_client = true;
        cfg.ipfs.max_connections = 64;
        cfg.ipfs.storage_max = Some(24 << 20);
        cfg.informer.interval = Duration::from_secs(3);
        cfg.informer.tags = [("a.b", "1"), ("", "empty key"), ("z", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let c = &mut cfg.controller;
        c.sources = vec![
            "dir:/a b".into(),
            "git:https://h.example/r.git#tag=v1&path=x".into(),
        ];
        c.interval = Duration::from_secs(1);
        c.force = true;
        c.git_cache = "/var/cache/pinfleet git".into();
        c.webhooks = vec![
            (ReceiverKind::GitLab, "a".into()),
            (ReceiverKind::Generic, "b-c_d".into()),
            (ReceiverKind::GitHub, "e".into()),
        ];
        c.webhook_listen = Some("127.0.0.1:9095".parse().unwrap());
        let a = &mut cfg.api;
        a.max_upload_bytes = 5;
        a.max_pinset_body_bytes = 6;
        a.max_concurrent_pinset_writes = 7;
        a.read_timeout = Duration::from_secs(8);
        a.max_connections = 9;
        cfg.pinsvc.listen = None;
        cfg.pinsvc.tokens = [
            ("kubo", "reader:0123456789abcdef"),
            ("app x", "zyxwvutsrqponmlk"),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_owned(), crate::config::PinSvcToken::parse(t).unwrap()))
        .collect();
        cfg
    }

    #[test]
    fn a_config_with_every_key_changed_round_trips() {
        let cfg = every_key_changed();
        let (changed, defaults) = (document(&cfg), document(&ServiceConfig::unset()));
        for section in schema() {
            for (key, _) in &section.keys {
                if key == "secret" {
                    continue;
                }
                let (s, k) = (section.name.as_str(), key.as_str());
                assert_ne!(
                    changed[s][k].to_string(),
                    defaults[s][k].to_string(),
                    "{s}.{k} is not changed by the test"
                );
            }
        }
        assert_eq!(parse(&cfg.to_toml()).unwrap(), cfg, "{}", cfg.to_toml());
    }

    #[test]
    fn serializing_a_config_never_writes_its_secret() {
        let cfg = ServiceConfig::new(secret());
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(!json.contains(SECRET), "{json}");
        assert!(json.contains("\"secret\":\"\""), "{json}");
        assert!(cfg.to_toml().contains(&format!("secret = \"{SECRET}\"")));
    }

    #[test]
    fn the_written_layout_is_stable() {
        let text = ServiceConfig::default_toml(SECRET);
        assert!(text.starts_with(HEADER), "{text}");
        assert!(
            text.contains(
                "\n# REST API (IPFS Cluster compatible).\n[api]\n\
                 # Socket address the REST API listens on (ip:port; port 0 picks a free port). \
                 A non-loopback address needs basic_auth_credentials (or allow_unauthenticated_remote).\n\
                 listen = \"127.0.0.1:9094\"\n"
            ),
            "{text}"
        );
        assert!(text.contains("\ntags = {}\n"), "{text}");
        assert!(text.contains("\nbootstrap = []\n"), "{text}");
        assert!(text.contains("\nforce = false\n"), "{text}");
        let mut cfg = ServiceConfig::new(secret());
        cfg.informer.tags = [("region", "eu"), ("odd key", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        cfg.cluster.bootstrap = vec![
            "/ip4/10.0.0.1/tcp/1".parse::<Multiaddr>().unwrap(),
            "/ip4/10.0.0.2/tcp/1".parse().unwrap(),
        ];
        let text = cfg.to_toml();
        assert!(
            text.contains("\ntags = { \"odd key\" = \"x\", region = \"eu\" }\n"),
            "{text}"
        );
        assert!(
            text.contains("\nbootstrap = [\"/ip4/10.0.0.1/tcp/1\", \"/ip4/10.0.0.2/tcp/1\"]\n"),
            "{text}"
        );
    }
}
