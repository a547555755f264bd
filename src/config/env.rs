//! `PINFLEET_<SECTION>_<KEY>` environment overrides: each variable whose
//! name starts with a known section replaces that key in the parsed file
//! before it is deserialized, so an override is checked exactly like the
//! file and its problems name the variable.
//!
//! This module owns the variable names and how their text becomes a TOML
//! value (lists comma-separated, tags `k=v,k=v`); it does not check values.

use std::collections::{BTreeMap, BTreeSet};

use toml::{Table, Value};

use super::render::{Kind, schema};
use crate::manifest::{shown, suggest};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "PINFLEET_";

/// The `PINFLEET_*` variables of this process (others, and any that are not
/// valid UTF-8, are left out).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// The environment variable that overrides `section.key`.
pub fn env_var_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}_{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// What applying the overrides did.
#[derive(Debug, Default)]
pub(super) struct Overrides {
    /// Problems with the variables themselves (unknown key, bad tag list),
    /// each starting with the variable's name.
    pub problems: Vec<String>,
    /// `section.key` of variables that could not be read, so that rules
    /// involving those keys stay quiet.
    pub failed: BTreeSet<String>,
    /// `section.key` → the variable that set it.
    pub set_by: BTreeMap<String, String>,
}

/// Replaces keys of `table` from `PINFLEET_<SECTION>_<KEY>` variables in
/// `env`, in name order. Other `PINFLEET_*` variables (`PINFLEET_HOST`,
/// `PINFLEET_BENCH_PINS`) are not ours: only a known section prefix claims a
/// variable.
pub(super) fn apply(table: &mut Table, env: &[(String, String)]) -> Overrides {
    let mut out = Overrides::default();
    let mut env: Vec<&(String, String)> = env.iter().collect();
    env.sort();
    for (var, text) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key_upper)) = schema().iter().find_map(|s| {
            let upper = s.name.to_ascii_uppercase();
            let key = rest.strip_prefix(&upper)?.strip_prefix('_')?;
            Some((s, key))
        }) else {
            continue;
        };
        let key = key_upper.to_ascii_lowercase();
        let path = format!("{}.{key}", section.name);
        let Some(kind) = section.kind(&key) else {
            let names = section.key_names();
            let hint = match suggest(&key, &names) {
                Some(s) => format!(", did you mean {}?", env_var_name(&section.name, s)),
                None => format!(
                    ", expected one of: {}",
                    names
                        .iter()
                        .map(|k| env_var_name(&section.name, k))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            out.problems.push(format!(
                "{var}: unknown key {} in [{}]{hint}",
                shown(&key),
                section.name
            ));
            continue;
        };
        let value = match value(kind, text, SEMICOLON_TABLES.contains(&path.as_str())) {
            Ok(v) => v,
            // A malformed entry of a table of secrets is not repeated.
            Err(_) if SECRET_TABLES.contains(&path.as_str()) => {
                out.problems.push(format!(
                    "{var}: an entry is not name=value (entries not shown: they hold secrets)"
                ));
                out.failed.insert(path);
                continue;
            }
            Err(e) => {
                out.problems.push(format!("{var}: {e}"));
                out.failed.insert(path);
                continue;
            }
        };
        let slot = table
            .entry(section.name.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        // A section that is not a table is reported when it is read.
        if let Some(keys) = slot.as_table_mut() {
            keys.insert(key, value);
            out.set_by.insert(path, var.clone());
        }
    }
    out
}

/// Tables whose entries are always separated by `;`: their values hold
/// commas (an argon2 hash's parameters, `m=19456,t=2,p=1`) and never `;`,
/// so a lone entry with no `;` is still one entry.
const SEMICOLON_TABLES: &[&str] = &["api.basic_auth_credentials"];

/// Tables whose values are secrets: an error never shows an entry.
const SECRET_TABLES: &[&str] = &["pinsvc.tokens"];

/// The TOML value a variable's text stands for, by the kind of the key.
/// Text that is not of the kind (`lots` for an integer) stays a string, to
/// be reported as the wrong type with the key's own message. `semicolons`:
/// a table's entries are separated by `;` only (see [`SEMICOLON_TABLES`]).
fn value(kind: Kind, text: &str, semicolons: bool) -> Result<Value, String> {
    let items = || {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(match kind {
        Kind::Text => Value::String(text.to_owned()),
        Kind::Integer => match text.trim().parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::String(text.to_owned()),
        },
        Kind::List => Value::Array(items().map(Value::String).collect()),
        Kind::Bool => match text.trim() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            other => Value::String(other.to_owned()),
        },
        Kind::Tags => {
            // `;` separates entries when a value holds commas (an argon2
            // hash's parameters do).
            let sep = if semicolons || text.contains(';') {
                ';'
            } else {
                ','
            };
            let mut table = Table::new();
            for item in text.split(sep).map(str::trim).filter(|s| !s.is_empty()) {
                match item.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() => {
                        table.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
                    }
                    _ => {
                        return Err(format!("invalid tag {}: expected key=value", shown(item)));
                    }
                }
            }
            Value::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::load::fixtures::*;
    use super::super::render::document;
    use super::super::types::{IpfsBackendKind, ServiceConfig};
    use super::*;

    #[test]
    fn env_overrides_are_applied() {
        let vars = [
            ("PINFLEET_API_LISTEN", "127.0.0.1:0"),
            (
                "PINFLEET_CLUSTER_BOOTSTRAP",
                "/ip4/10.0.0.1/tcp/9096, /ip4/10.0.0.2/tcp/9096",
            ),
            ("PINFLEET_CLUSTER_REPLICATION_FACTOR_MIN", "2"),
            ("PINFLEET_CLUSTER_REPLICATION_FACTOR_MAX", "3"),
            ("PINFLEET_CLUSTER_PEERNAME", "peer-1"),
            ("PINFLEET_CONSENSUS_WRITE_TIMEOUT", "1m"),
            ("PINFLEET_INFORMER_TAGS", "region=eu,group=a"),
            ("PINFLEET_IPFS_BACKEND", "kubo"),
            // Not ours: no known section.
            ("PINFLEET_BENCH_PINS", "10"),
            ("HOME", "/root"),
        ];
        let text = format!("{}[api]\nlisten = \"127.0.0.1:9999\"\n", minimal());
        let cfg = ServiceConfig::from_toml_str(&text, file(), &env(&vars)).unwrap();
        assert_eq!(cfg.api.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cfg.cluster.bootstrap.len(), 2);
        assert_eq!(cfg.cluster.replication_factor_min, 2);
        assert_eq!(cfg.cluster.replication_factor_max, 3);
        assert_eq!(cfg.cluster.peername, "peer-1");
        assert_eq!(cfg.consensus.write_timeout, Duration::from_secs(60));
        assert_eq!(
            cfg.informer.tags.get("region").map(String::as_str),
            Some("eu")
        );
        assert_eq!(
            cfg.informer.tags.get("group").map(String::as_str),
            Some("a")
        );
        assert_eq!(cfg.ipfs.backend, IpfsBackendKind::Kubo);

        // The secret itself can come from the environment.
        let cfg =
            ServiceConfig::from_toml_str("", file(), &env(&[("PINFLEET_CLUSTER_SECRET", SECRET)]))
                .unwrap();
        assert_eq!(cfg.cluster.secret, secret());
    }

    #[test]
    fn env_overrides_are_validated() {
        let vars = [
            ("PINFLEET_API_LISTEN", "nowhere"),
            ("PINFLEET_CLUSTER_LISTEN_MULTIADRESS", "/ip4/1.2.3.4/tcp/1"),
            ("PINFLEET_CONSENSUS_BATCH_MAX_PINS", "lots"),
            ("PINFLEET_INFORMER_TAGS", "region"),
            ("PINFLEET_CLUSTER_LISTEN_MULTIADDRESS", ""),
            ("PINFLEET_IPFS_BACKEND", "kubbo"),
        ];
        let mut p = problems(&minimal(), &vars);
        p.sort();
        assert_eq!(
            p,
            [
                "PINFLEET_CLUSTER_LISTEN_MULTIADRESS: unknown key \"listen_multiadress\" in [cluster], did you mean PINFLEET_CLUSTER_LISTEN_MULTIADDRESS?",
                "PINFLEET_INFORMER_TAGS: invalid tag \"region\": expected key=value",
                "api.listen (from PINFLEET_API_LISTEN): invalid socket address \"nowhere\": expected ip:port, e.g. 127.0.0.1:9094",
                "cluster.listen_multiaddress (from PINFLEET_CLUSTER_LISTEN_MULTIADDRESS): must list at least one address",
                "consensus.batch_max_pins (from PINFLEET_CONSENSUS_BATCH_MAX_PINS): expected an integer, found string \"lots\"",
                "ipfs.backend (from PINFLEET_IPFS_BACKEND): unknown backend \"kubbo\", did you mean \"kubo\"?",
            ]
        );
    }

    #[test]
    fn users_come_from_the_environment_separated_by_semicolons() {
        let hash = crate::auth::hash_password("pw").unwrap();
        let vars = [(
            "PINFLEET_API_BASIC_AUTH_CREDENTIALS",
            format!("ann=admin:{hash}; bob=reader:{hash}"),
        )];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cfg = ServiceConfig::from_toml_str(&minimal(), file(), &env(&vars)).unwrap();
        let users = &cfg.api.basic_auth_credentials;
        assert_eq!(users.len(), 2, "{users:?}");
        assert_eq!(users["ann"].role, crate::auth::Role::Admin);
        assert_eq!(users["bob"].role, crate::auth::Role::Reader);
        let bad = problems(
            &minimal(),
            &[("PINFLEET_API_BASIC_AUTH_CREDENTIALS", "eve=admin:plain")],
        );
        assert!(
            bad.iter().any(|p| p.contains("eve")
                && p.contains("not an argon2 hash")
                && !p.contains("plain")),
            "{bad:?}"
        );
    }

    #[test]
    fn a_single_user_needs_no_trailing_semicolon() {
        let hash = crate::auth::hash_password("pw").unwrap();
        assert!(hash.contains(','), "the hash holds commas: {hash}");
        for text in [format!("ann=admin:{hash}"), format!("ann=admin:{hash};")] {
            let vars = [("PINFLEET_API_BASIC_AUTH_CREDENTIALS", text.as_str())];
            let cfg = ServiceConfig::from_toml_str(&minimal(), file(), &env(&vars)).unwrap();
            let users = &cfg.api.basic_auth_credentials;
            assert_eq!(users.len(), 1, "{text}: {users:?}");
            assert_eq!(users["ann"].role, crate::auth::Role::Admin);
            let users = crate::auth::Users::new(users.clone());
            assert_eq!(users.verify("ann", "pw"), Some(crate::auth::Role::Admin));
        }
    }

    #[test]
    fn env_var_names() {
        assert_eq!(
            env_var_name("cluster", "replication_factor_min"),
            "PINFLEET_CLUSTER_REPLICATION_FACTOR_MIN"
        );
    }

    /// How `value` is written in a variable.
    fn env_text(value: &toml_edit::Value) -> String {
        match value {
            toml_edit::Value::String(s) => s.value().clone(),
            toml_edit::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(","),
            toml_edit::Value::InlineTable(t) => t
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string().trim().to_owned(),
        }
    }

    #[test]
    fn every_key_can_be_set_from_the_environment() {
        let mut changed = ServiceConfig::new(secret());
        changed.cluster.peername = "p".into();
        changed.cluster.bootstrap = vec!["/ip4/10.0.0.1/tcp/1".parse().unwrap()];
        changed.cluster.replication_factor_min = 2;
        changed.cluster.replication_factor_max = 2;
        changed.cluster.state_sync_interval = Duration::from_secs(7);
        changed.consensus.heartbeat_interval = Duration::from_millis(10);
        changed.consensus.max_in_snapshot_log_to_keep = 0;
        changed.ipfs.backend = IpfsBackendKind::Kubo;
        changed.informer.tags = [("a".to_owned(), "b".to_owned())].into();
        changed.controller.sources = vec!["dir:/m".into(), "dir:/n".into()];
        changed.controller.force = true;
        changed.controller.git_cache = "/c".into();
        for config in [ServiceConfig::new(secret()), changed] {
            let doc = document(&config);
            let mut vars = Vec::new();
            for section in schema() {
                for (key, _) in &section.keys {
                    let value = doc[section.name.as_str()][key.as_str()].as_value().unwrap();
                    let text = if key == "secret" {
                        SECRET.to_owned()
                    } else {
                        env_text(value)
                    };
                    vars.push((env_var_name(&section.name, key), text));
                }
            }
            let loaded = ServiceConfig::from_toml_str("", file(), &vars).unwrap();
            assert_eq!(loaded, config, "{vars:#?}");
        }
    }

    #[test]
    fn each_kind_of_variable_is_read_and_a_bad_one_is_named() {
        let cfg = ServiceConfig::from_toml_str(
            &minimal(),
            file(),
            &env(&[
                ("PINFLEET_CONTROLLER_FORCE", " false "),
                ("PINFLEET_CONTROLLER_WEBHOOKS", "github:a, generic:b"),
                ("PINFLEET_INFORMER_TAGS", ""),
                ("PINFLEET_CLUSTER_BOOTSTRAP", " , "),
                ("PINFLEET_CONSENSUS_BATCH_MAX_PINS", " 7 "),
            ]),
        )
        .unwrap();
        assert!(!cfg.controller.force);
        assert_eq!(cfg.controller.webhooks.len(), 2);
        assert!(cfg.informer.tags.is_empty());
        assert!(cfg.cluster.bootstrap.is_empty());
        assert_eq!(cfg.consensus.batch_max_pins, 7);

        let mut p = problems(
            &minimal(),
            &[
                ("PINFLEET_CLUSTER_PEERNAME", "ok"),
                ("PINFLEET_CLUSTER_REPLICATION_FACTOR_MIN", "1.5"),
                ("PINFLEET_CONSENSUS_WRITE_TIMEOUT", "soon"),
                ("PINFLEET_CONTROLLER_FORCE", "TRUE"),
                ("PINFLEET_CONTROLLER_WEBHOOKS", "github:a,svn:b"),
                ("PINFLEET_INFORMER_TAGS", "=x"),
            ],
        );
        p.sort();
        assert_eq!(
            p,
            [
                "PINFLEET_INFORMER_TAGS: invalid tag \"=x\": expected key=value",
                "cluster.replication_factor_min (from PINFLEET_CLUSTER_REPLICATION_FACTOR_MIN): \
                 expected an integer, found string \"1.5\"",
                "consensus.write_timeout (from PINFLEET_CONSENSUS_WRITE_TIMEOUT): \
                 invalid duration \"soon\": expected a number",
                "controller.force (from PINFLEET_CONTROLLER_FORCE): \
                 expected a boolean, found string \"TRUE\"",
                "controller.webhooks (from PINFLEET_CONTROLLER_WEBHOOKS): \
                 [1]: unknown webhook kind \"svn\", expected one of: github, gitlab, generic",
            ]
        );
    }

    #[test]
    fn a_variable_overrides_a_bad_value_in_the_file_and_a_bad_variable_keeps_rules_quiet() {
        let text = format!("{}[api]\nlisten = 3\n", minimal());
        let cfg = ServiceConfig::from_toml_str(
            &text,
            file(),
            &env(&[("PINFLEET_API_LISTEN", "127.0.0.1:1")]),
        )
        .unwrap();
        assert_eq!(cfg.api.listen.port(), 1);
        // min comes from a variable that cannot be read: the min/max rule
        // does not also complain about max.
        let text = format!("{}replication_factor_max = 2\n", minimal());
        let p = problems(&text, &[("PINFLEET_CLUSTER_REPLICATION_FACTOR_MIN", "x")]);
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn trusted_peers_parse_from_the_file_and_a_variable_and_a_bad_id_is_named() {
        let id = || {
            libp2p::identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id()
        };
        let (a, b) = (id(), id());
        // An RSA key's id is the hash of the key (`Qm…`).
        let rsa = "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN";
        let text = format!("{}trusted_peers = [\"{rsa}\"]\n", minimal());
        assert_eq!(
            parse(&text).unwrap().cluster.trusted_peers[0].to_string(),
            rsa
        );
        assert!(parse(&minimal()).unwrap().cluster.trusted_peers.is_empty());
        let text = format!("{}trusted_peers = [\"{a}\", \" {b} \"]\n", minimal());
        assert_eq!(parse(&text).unwrap().cluster.trusted_peers, [a, b]);
        let vars = [("PINFLEET_CLUSTER_TRUSTED_PEERS", format!("{b},{a}"))];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cfg = ServiceConfig::from_toml_str(&minimal(), file(), &env(&vars)).unwrap();
        assert_eq!(cfg.cluster.trusted_peers, [b, a]);

        let text = format!("{}trusted_peers = [\"{a}\", \"12D3KooWnope\"]\n", minimal());
        assert_eq!(
            problems(&text, &[]),
            [
                "cluster.trusted_peers: [1]: invalid peer id \"12D3KooWnope\": \
              expected a libp2p peer id such as 12D3KooW…"
            ]
        );
        assert_eq!(
            problems(&minimal(), &[("PINFLEET_CLUSTER_TRUSTED_PEERS", "QmBad")]),
            [
                "cluster.trusted_peers (from PINFLEET_CLUSTER_TRUSTED_PEERS): [0]: invalid peer id \
              \"QmBad\": expected a libp2p peer id such as 12D3KooW…"
            ]
        );
        // Written back as the list it was read from.
        let mut cfg = ServiceConfig::new(secret());
        cfg.cluster.trusted_peers = vec![a];
        let back = ServiceConfig::from_toml_str(&cfg.to_toml(), file(), &[]).unwrap();
        assert_eq!(back.cluster.trusted_peers, [a]);
    }
}
