//! Loading `service.toml`: parse, override, deserialize, check rules.
//!
//! The file is parsed into a TOML table (a syntax error is the one problem,
//! with its line and column), environment overrides replace keys, and the
//! table is deserialized into [`ServiceConfig`] with serde, tracking the
//! path of an error (`serde_path_to_error`) and of every unknown key
//! (`serde_ignored`). A bad key is reported, taken out and the rest read
//! again, so that one load reports every problem, each named by its key
//! path or the variable that set it; then the rules that span keys are
//! checked on whatever read cleanly.
//!
//! This module owns that sequence and the error type. Nothing here starts
//! anything; the daemon builds its components from the validated config.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_path_to_error::Segment;
use toml::{Table, Value};

use super::codec::{describe, unknown_message};
use super::env::{self, process_env};
use super::render::schema;
use super::types::ServiceConfig;
use crate::manifest::duration::format_duration;
use crate::manifest::{MAX_DIAGNOSTIC_BYTES, SHOWN_CHARS, capped};

/// Every problem found while loading a service config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file being loaded.
    pub file: PathBuf,
    /// One lower-case message per problem, each starting with the key path
    /// (`consensus.heartbeat_interval: …`) or the environment variable.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    /// One line per problem, each prefixed with the file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            return write!(f, "{}: invalid service config", self.file.display());
        }
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {problem}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ServiceConfig {
    /// Loads `path` with overrides from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, &process_env())
    }

    /// Loads `path` with overrides from `env` (name, value) pairs; only
    /// names starting with `PINFLEET_` are looked at.
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![format!("cannot read file: {e}")],
        })?;
        Self::from_toml_str(&text, path, env)
    }

    /// Parses `text` as the contents of `file` (used in errors only), applies
    /// `env` overrides and validates everything, reporting every problem.
    pub fn from_toml_str(
        text: &str,
        file: &Path,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_path_buf(),
            problems,
        };
        let mut table: Table = text
            .parse()
            .map_err(|e| fail(vec![toml_problem(text, &e)]))?;
        let overrides = env::apply(&mut table, env);
        let mut report = Report {
            env: overrides.problems,
            failed: overrides.failed,
            set_by: overrides.set_by,
            ..Report::default()
        };
        report.take_non_tables(&mut table);
        let config = report.read(&mut table);
        report.check_rules(&config, &table);
        let problems = report.into_problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
        }
    }
}

/// Where a problem sorts: its section and key in file order, value
/// problems of a section before the rules that span its keys.
type Place = (usize, bool, usize);

/// One load's bookkeeping.
#[derive(Default)]
struct Report {
    /// Unknown sections and keys, and sections that are not tables, each
    /// with its top-level name to sort by (toml keeps a table sorted).
    names: Vec<(String, String)>,
    /// Problems with environment variables themselves.
    env: Vec<String>,
    /// Problems with values and rules, sorted by place at the end.
    values: Vec<(Place, String)>,
    /// `section` or `section.key` that did not read, so that rules
    /// involving them stay quiet.
    failed: BTreeSet<String>,
    /// `section.key` → the variable that set it.
    set_by: BTreeMap<String, String>,
}

impl Report {
    /// Takes out each section that is not a table: serde would read a
    /// struct from an array too, and a datetime as a table of one key.
    fn take_non_tables(&mut self, table: &mut Table) {
        for section in schema() {
            let name = section.name.as_str();
            if let Some(found) = table.get(name).filter(|v| !v.is_table()) {
                let message = format!(
                    "{name}: expected a table ([{name}]), found {}",
                    describe(found)
                );
                self.names.push((name.to_owned(), message));
                self.failed.insert(name.to_owned());
                table.remove(name);
            }
        }
    }

    /// Deserializes `table`, taking out each key that fails (so that it
    /// keeps its default) and reading the rest again, until it reads.
    fn read(&mut self, table: &mut Table) -> ServiceConfig {
        loop {
            let mut unknown = Vec::new();
            let mut note = |path: serde_ignored::Path<'_>| unknown.push(map_keys(&path));
            let err = match attempt(table, &mut note) {
                Ok(config) => {
                    for path in unknown {
                        self.unknown_name(table, path);
                    }
                    return config;
                }
                Err(err) => err,
            };
            let keys: Vec<&str> = err
                .path()
                .iter()
                .filter_map(|s| match s {
                    Segment::Map { key } => Some(key.as_str()),
                    _ => None,
                })
                .collect();
            let message = err.inner().message().trim().to_owned();
            let removed = match keys.as_slice() {
                [section, key, ..] => {
                    let path = format!("{section}.{key}");
                    self.problem(section, key, false, message);
                    self.failed.insert(path);
                    table
                        .get_mut(*section)
                        .and_then(Value::as_table_mut)
                        .and_then(|t| t.remove(*key))
                        .is_some()
                }
                // Not expected once non-tables are out; reported as is.
                [section] => {
                    let place = (section_index(section), false, 0);
                    self.values.push((place, format!("{section}: {message}")));
                    self.failed.insert((*section).to_owned());
                    table.remove(*section).is_some()
                }
                [] => {
                    self.values.push(((0, false, 0), message));
                    false
                }
            };
            // An error that taking its key out cannot cure would repeat.
            if !removed {
                return ServiceConfig::unset();
            }
        }
    }

    /// An unknown section, or a key outside any section, or an unknown key
    /// of a section.
    fn unknown_name(&mut self, table: &Table, path: Vec<String>) {
        let sections: Vec<&str> = schema().iter().map(|s| s.name.as_str()).collect();
        // An unknown name is the user's: its label is cut like a quoted value.
        let cut = |s: &str| capped(s.to_string(), SHOWN_CHARS);
        let message = match path.as_slice() {
            [name] => {
                // A key written above every section header lands at the top.
                let owner = schema().iter().find(|s| s.kind(name).is_some());
                match owner {
                    Some(s) if !table.get(name).is_some_and(Value::is_table) => format!(
                        "{name}: keys belong in a section, did you mean {}.{name} (under [{}])?",
                        s.name, s.name
                    ),
                    _ => format!(
                        "{}: {}",
                        cut(name),
                        unknown_message("section", name, &sections)
                    ),
                }
            }
            [section, key, ..] => {
                let keys = schema()
                    .iter()
                    .find(|s| s.name == *section)
                    .map(|s| s.key_names())
                    .unwrap_or_default();
                format!(
                    "{}.{}: {}",
                    cut(section),
                    cut(key),
                    unknown_message("key", key, &keys)
                )
            }
            [] => return,
        };
        let top = path.into_iter().next().unwrap_or_default();
        self.names.push((top, message));
    }

    /// A problem with `section.key`, labelled with the variable that set
    /// it, if one did.
    fn problem(&mut self, section: &str, key: &str, rule: bool, message: String) {
        let path = format!("{section}.{key}");
        let label = match self.set_by.get(&path) {
            Some(var) => format!("{path} (from {var})"),
            None => path,
        };
        let place = (section_index(section), rule, key_index(section, key));
        self.values.push((place, format!("{label}: {message}")));
    }

    /// Whether any of `keys` of `section` (or the section) did not read.
    fn failed(&self, section: &str, keys: &[&str]) -> bool {
        self.failed.contains(section)
            || keys
                .iter()
                .any(|k| self.failed.contains(&format!("{section}.{k}")))
    }

    /// The secret is required; each rule spanning keys is checked only when
    /// all its keys read.
    fn check_rules(&mut self, config: &ServiceConfig, table: &Table) {
        let has_secret = table
            .get("cluster")
            .and_then(Value::as_table)
            .is_some_and(|t| t.contains_key("secret"));
        if !has_secret && !self.failed("cluster", &["secret"]) {
            self.problem(
                "cluster",
                "secret",
                false,
                "missing: set it to 64 hex characters (32 bytes), the same on every peer \
                 (`pinfleet init` writes a fresh one), or set PINFLEET_CLUSTER_SECRET"
                    .into(),
            );
        }
        let c = &config.cluster;
        if !self.failed(
            "cluster",
            &["replication_factor_min", "replication_factor_max"],
        ) && let Some(p) =
            replication_problem(c.replication_factor_min, c.replication_factor_max)
        {
            self.problem("cluster", "replication_factor_min", true, p);
        }
        let a = &config.api;
        if !self.failed(
            "api",
            &[
                "listen",
                "basic_auth_credentials",
                "allow_unauthenticated_remote",
            ],
        ) && !a.listen.ip().is_loopback()
            && a.basic_auth_credentials.is_empty()
            && !a.allow_unauthenticated_remote
        {
            let p = format!(
                "{} is not a loopback address and the API has no users: anyone who reaches it \
                 could pin, unpin and remove peers. Add users to api.basic_auth_credentials \
                 (`pinfleet passwd`), listen on 127.0.0.1, or set \
                 api.allow_unauthenticated_remote = true if something in front authenticates",
                a.listen
            );
            self.problem("api", "listen", true, p);
        }
        let ps = &config.pinsvc;
        if !self.failed("pinsvc", &["listen", "tokens"])
            && let Some(listen) = ps.listen
            && !listen.ip().is_loopback()
            && ps.tokens.is_empty()
        {
            let p = format!(
                "{listen} is not a loopback address and the Pinning Service API has no tokens: \
                 add pinsvc.tokens, listen on 127.0.0.1, or set listen = \"\" to disable it"
            );
            self.problem("pinsvc", "listen", true, p);
        }
        if !self.failed("api", &["cors_allowed_origins", "cors_allow_credentials"])
            && a.cors_allow_credentials
            && a.cors_allowed_origins.iter().any(|o| o == "*")
        {
            self.problem(
                "api",
                "cors_allow_credentials",
                true,
                "cannot be true with cors_allowed_origins = [\"*\"]: list the origins".into(),
            );
        }
        let k = &config.consensus;
        if !self.failed("consensus", &["heartbeat_interval", "election_timeout_min"])
            && k.heartbeat_interval >= k.election_timeout_min
        {
            let p = format!(
                "{} must be below election_timeout_min ({})",
                format_duration(k.heartbeat_interval),
                format_duration(k.election_timeout_min)
            );
            self.problem("consensus", "heartbeat_interval", true, p);
        }
        if !self.failed(
            "consensus",
            &["election_timeout_min", "election_timeout_max"],
        ) && k.election_timeout_min >= k.election_timeout_max
        {
            let p = format!(
                "{} must be above election_timeout_min ({})",
                format_duration(k.election_timeout_max),
                format_duration(k.election_timeout_min)
            );
            self.problem("consensus", "election_timeout_max", true, p);
        }
        let a = &config.api;
        if !self.failed("api", &["tls_cert_file", "tls_key_file"])
            && a.tls_cert_file.is_some() != a.tls_key_file.is_some()
        {
            let (set, unset) = if a.tls_cert_file.is_some() {
                ("tls_cert_file", "tls_key_file")
            } else {
                ("tls_key_file", "tls_cert_file")
            };
            let p = format!("set together with {set}: https needs both a certificate and its key");
            self.problem("api", unset, true, p);
        }
    }

    /// Unknown names, then variables, then values and rules in file order.
    fn into_problems(mut self) -> Vec<String> {
        self.names.sort_by(|a, b| a.0.cmp(&b.0));
        self.values.sort_by_key(|(place, _)| *place);
        let mut out: Vec<String> = self.names.into_iter().map(|(_, p)| p).collect();
        out.append(&mut self.env);
        out.extend(self.values.into_iter().map(|(_, p)| p));
        out
    }
}

type Attempt = Result<ServiceConfig, serde_path_to_error::Error<toml::de::Error>>;

/// One try at deserializing `table`, noting every ignored key's path.
fn attempt(table: &Table, note: &mut impl FnMut(serde_ignored::Path<'_>)) -> Attempt {
    fn run<'de, D>(de: D, note: &mut impl FnMut(serde_ignored::Path<'_>)) -> Attempt
    where
        D: serde::Deserializer<'de, Error = toml::de::Error>,
    {
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, note))
    }
    // Through text, so that a datetime stays one: toml's `Table`
    // deserializer hands datetimes over as strings, so a string key would
    // take `peername = 1979-05-27T07:32:00Z`.
    let text = toml::to_string(table);
    match text.as_deref().map(toml::Deserializer::parse) {
        Ok(Ok(de)) => run(de, note),
        // A table parsed from TOML is always written and read back; should
        // that ever fail, the table itself still reads.
        _ => run(table.clone(), note),
    }
}

/// The map keys of an ignored key's path (`api.lisen` → `["api", "lisen"]`).
fn map_keys(path: &serde_ignored::Path<'_>) -> Vec<String> {
    let mut keys = Vec::new();
    let mut at = path;
    loop {
        at = match at {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Map { parent, key } => {
                keys.push(key.clone());
                parent
            }
            serde_ignored::Path::Seq { parent, .. }
            | serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => parent,
        };
    }
    keys.reverse();
    keys
}

fn section_index(section: &str) -> usize {
    schema()
        .iter()
        .position(|s| s.name == section)
        .unwrap_or(usize::MAX)
}

fn key_index(section: &str, key: &str) -> usize {
    schema()
        .iter()
        .find(|s| s.name == section)
        .and_then(|s| s.keys.iter().position(|(k, _)| k == key))
        .unwrap_or(usize::MAX)
}

/// The manifest's rule (DESIGN §5), so a cluster default is always a valid
/// pin option: each is -1 or at least 1, min -1 needs max -1, min ≤ max.
pub(super) fn replication_problem(min: i32, max: i32) -> Option<String> {
    let valid = |n: i32| n == -1 || n >= 1;
    if !valid(min) || !valid(max) {
        Some(format!(
            "min {min} / max {max}: each must be -1 (every peer) or at least 1"
        ))
    } else if min == -1 && max != -1 {
        Some(format!(
            "min -1 (every peer) needs replication_factor_max -1 too, found {max}"
        ))
    } else if max != -1 && min > max {
        Some(format!(
            "{min} is greater than replication_factor_max ({max})"
        ))
    } else {
        None
    }
}

fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    let message = capped(e.message().trim().replace('\n', "; "), MAX_DIAGNOSTIC_BYTES);
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("invalid toml at line {line}, column {col}: {message}")
        }
        None => format!("invalid toml: {message}"),
    }
}

/// Helpers shared by the config tests.
#[cfg(test)]
pub(super) mod fixtures {
    use std::path::Path;

    use super::ConfigError;
    use crate::config::{ClusterSecret, ServiceConfig};

    /// A valid secret.
    pub const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    /// The file name errors carry.
    pub fn file() -> &'static Path {
        Path::new("service.toml")
    }

    /// Owned (name, value) pairs.
    pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Loads `text` without environment.
    pub fn parse(text: &str) -> Result<ServiceConfig, ConfigError> {
        ServiceConfig::from_toml_str(text, file(), &[])
    }

    /// The smallest valid file.
    pub fn minimal() -> String {
        format!("[cluster]\nsecret = \"{SECRET}\"\n")
    }

    /// The problems of a load that must fail.
    pub fn problems(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        ServiceConfig::from_toml_str(text, file(), &env(vars))
            .unwrap_err()
            .problems
    }

    /// [`SECRET`] parsed.
    pub fn secret() -> ClusterSecret {
        ClusterSecret::parse_hex(SECRET).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn minimal_file_gets_every_default() {
        assert_eq!(parse(&minimal()).unwrap(), ServiceConfig::new(secret()));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = format!(
            "{}listen_multiaddress = [\"/ip4/0.0.0.0/tcp/9096\", \"nope\"]\n\
             [consensus]\nheartbeat_interval = \"x\"\n\
             [api]\nlisten = \"localhost\"\n",
            minimal()
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        assert_eq!(err.to_string().lines().count(), 3);
        let text = err.to_string();
        assert!(
            text.contains(
                "service.toml: cluster.listen_multiaddress: [1]: invalid multiaddr \"nope\""
            ),
            "{text}"
        );
        assert!(
            text.contains("service.toml: consensus.heartbeat_interval: invalid duration \"x\""),
            "{text}"
        );
        assert!(
            text.contains("service.toml: api.listen: invalid socket address \"localhost\""),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_and_sections_get_a_suggestion() {
        let text = format!(
            "peername = \"a\"\n{}listen_multiadress = []\n[consensos]\n[api]\nlisen = \"x\"\n",
            minimal()
        );
        let p = problems(&text, &[]);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p.contains(&"peername: keys belong in a section, did you mean cluster.peername (under [cluster])?".to_owned()), "{p:#?}");
        assert!(p.contains(&"cluster.listen_multiadress: unknown key \"listen_multiadress\", did you mean \"listen_multiaddress\"?".to_owned()), "{p:#?}");
        assert!(
            p.contains(
                &"consensos: unknown section \"consensos\", did you mean \"consensus\"?".to_owned()
            ),
            "{p:#?}"
        );
        assert!(
            p.contains(&"api.lisen: unknown key \"lisen\", did you mean \"listen\"?".to_owned()),
            "{p:#?}"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let text = "cluster = 3\n\
                    [consensus]\n\
                    batch_max_pins = \"many\"\n\
                    snapshot_logs_since_last = -1\n\
                    write_timeout = 30\n\
                    [informer]\n\
                    tags = { region = 1 }\n";
        let p = problems(text, &[]);
        assert_eq!(
            p,
            [
                "cluster: expected a table ([cluster]), found integer 3",
                "consensus.snapshot_logs_since_last: -1 is negative; expected 0 or more",
                "consensus.write_timeout: expected a duration string like \"30s\", found integer 30",
                "consensus.batch_max_pins: expected an integer, found string \"many\"",
                "informer.tags: region: expected a string, found integer 1",
            ]
        );
    }

    #[test]
    fn missing_secret_is_an_error() {
        let p = problems("", &[]);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("cluster.secret: missing"), "{p:?}");
    }

    #[test]
    fn a_remote_listen_address_needs_users_or_an_explicit_opt_out() {
        let remote =
            |extra: &str| format!("{}[api]\nlisten = \"0.0.0.0:9094\"\n{extra}", minimal());
        let p = problems(&remote(""), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("api.listen: 0.0.0.0:9094 is not a loopback address")
                && p[0].contains("basic_auth_credentials"),
            "{p:?}"
        );
        assert!(parse(&remote("allow_unauthenticated_remote = true\n")).is_ok());
        let hash = crate::auth::hash_password("pw").unwrap();
        let users = format!("basic_auth_credentials = {{ ann = \"admin:{hash}\" }}\n");
        assert!(parse(&remote(&users)).is_ok());
        for loopback in ["127.0.0.1:0", "[::1]:9094"] {
            let text = format!("{}[api]\nlisten = \"{loopback}\"\n", minimal());
            assert!(parse(&text).is_ok(), "{loopback}");
        }
        let any_with_credentials = format!(
            "{}[api]\ncors_allowed_origins = [\"*\"]\ncors_allow_credentials = true\n",
            minimal()
        );
        assert_eq!(
            problems(&any_with_credentials, &[]),
            [
                "api.cors_allow_credentials: cannot be true with cors_allowed_origins = [\"*\"]: list the origins"
            ]
        );
    }

    #[test]
    fn a_remote_pinsvc_listen_address_needs_tokens() {
        let remote =
            |extra: &str| format!("{}[pinsvc]\nlisten = \"0.0.0.0:9097\"\n{extra}", minimal());
        let p = problems(&remote(""), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("pinsvc.listen: 0.0.0.0:9097 is not a loopback address"),
            "{p:?}"
        );
        let tokens = "tokens = { kubo = \"writer:0123456789abcdef\" }\n";
        let cfg = parse(&remote(tokens)).unwrap();
        assert_eq!(cfg.pinsvc.tokens["kubo"].secret, "0123456789abcdef");
        assert!(parse(&format!("{}[pinsvc]\nlisten = \"\"\n", minimal())).is_ok());
        let env = problems(&minimal(), &[("PINFLEET_PINSVC_LISTEN", "0.0.0.0:1")]);
        assert!(
            env[0].starts_with("pinsvc.listen (from PINFLEET_PINSVC_LISTEN)"),
            "{env:?}"
        );
    }

    #[test]
    fn cross_key_rules() {
        let text = format!(
            "{}replication_factor_min = 3\nreplication_factor_max = 2\n\
             [consensus]\nheartbeat_interval = \"1s\"\nelection_timeout_min = \"1s\"\nelection_timeout_max = \"500ms\"\n",
            minimal()
        );
        let p = problems(&text, &[]);
        assert_eq!(
            p,
            [
                "cluster.replication_factor_min: 3 is greater than replication_factor_max (2)",
                "consensus.heartbeat_interval: 1s must be below election_timeout_min (1s)",
                "consensus.election_timeout_max: 500ms must be above election_timeout_min (1s)",
            ]
        );
        // A broken key does not also trip the rules that depend on it.
        let text = format!(
            "{}[consensus]\nelection_timeout_min = \"soon\"\n",
            minimal()
        );
        assert_eq!(problems(&text, &[]).len(), 1);
        for (min, max, ok) in [
            (-1, -1, true),
            (2, -1, true),
            (1, 1, true),
            (-1, 2, false),
            (0, 0, false),
        ] {
            let text = format!(
                "{}replication_factor_min = {min}\nreplication_factor_max = {max}\n",
                minimal()
            );
            assert_eq!(parse(&text).is_ok(), ok, "{min}/{max}");
        }
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let p = problems("[cluster]\nsecret = \"abc\n", &[]);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("invalid toml at line 2, column"), "{p:?}");
        assert!(!p[0].contains('\n'));
    }

    #[test]
    fn load_reads_the_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.toml");
        std::fs::write(&path, ServiceConfig::default_toml(SECRET)).unwrap();
        let cfg =
            ServiceConfig::load_with_env(&path, &env(&[("PINFLEET_API_LISTEN", "127.0.0.1:0")]))
                .unwrap();
        assert_eq!(cfg.api.listen.port(), 0);

        let missing = dir.path().join("missing.toml");
        let err = ServiceConfig::load_with_env(&missing, &[]).unwrap_err();
        assert_eq!(err.file, missing);
        assert!(err.to_string().starts_with(&missing.display().to_string()));
        assert!(err.problems[0].starts_with("cannot read file"));
    }

    #[test]
    fn a_section_must_be_a_table_even_where_serde_would_take_a_list() {
        // serde reads a struct from a sequence, and toml hands a datetime
        // over as a one-key table: neither may pass for a section.
        let text = format!(
            "consensus = [\"1s\"]\ncontroller = 1979-05-27\n{}[[api]]\nlisten = \"127.0.0.1:1\"\n",
            minimal()
        );
        assert_eq!(
            problems(&text, &[("PINFLEET_API_LISTEN", "127.0.0.1:2")]),
            [
                "api: expected a table ([api]), found an array",
                "consensus: expected a table ([consensus]), found an array",
                "controller: expected a table ([controller]), found datetime 1979-05-27",
            ]
        );
    }

    #[test]
    fn a_tls_certificate_without_its_key_or_a_key_without_its_certificate_is_refused() {
        let text = format!("{}[api]\ntls_cert_file = \"cert.pem\"\n", minimal());
        assert_eq!(
            problems(&text, &[]),
            ["api.tls_key_file: set together with tls_cert_file: \
              https needs both a certificate and its key"]
        );
        assert_eq!(
            problems(&minimal(), &[("PINFLEET_API_TLS_KEY_FILE", "key.pem")]),
            ["api.tls_cert_file: set together with tls_key_file: \
              https needs both a certificate and its key"]
        );
        let both = format!(
            "{}[api]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n[tls]\nca_file = \"\"\n",
            minimal()
        );
        let cfg = parse(&both).unwrap();
        assert_eq!(cfg.api.tls_cert_file, Some(PathBuf::from("c.pem")));
        assert_eq!(cfg.tls.ca_file, None, "an empty path is none");
    }

    #[test]
    fn unknown_keys_are_found_at_any_depth_and_values_are_still_read() {
        let text = format!(
            "{}[api.tls]\ncert = \"x\"\n[informer]\ntags = {{ zone = {{ a = 1 }} }}\n\
             [consensus]\nbatch_max_pins = 0\n[consensus.extra.deeper]\nx = 1\n",
            minimal()
        );
        assert_eq!(
            problems(&text, &[]),
            [
                "api.tls: unknown key \"tls\", expected one of: listen, basic_auth_credentials, \
                 token_ttl, allow_unauthenticated_remote, public_names, cors_allowed_origins, \
                 cors_allowed_methods, cors_allow_credentials, cors_max_age, max_upload_bytes, \
                 max_pinset_body_bytes, max_concurrent_pinset_writes, read_timeout, \
                 max_connections, tls_cert_file, tls_key_file, ui",
                "consensus.extra: unknown key \"extra\", expected one of: heartbeat_interval, \
                 election_timeout_min, election_timeout_max, snapshot_logs_since_last, \
                 max_in_snapshot_log_to_keep, write_timeout, batch_max_pins, append_max_bytes, \
                 append_max_entries",
                "consensus.batch_max_pins: 0 is too small; expected at least 1",
                "informer.tags: zone: expected a string, found a table",
            ]
        );
    }

    #[test]
    fn every_bad_key_of_every_section_is_reported_in_file_order() {
        let mut text = String::new();
        let mut expected = Vec::new();
        for section in schema() {
            text.push_str(&format!("[{}]\n", section.name));
            for (key, _) in &section.keys {
                text.push_str(&format!("{key} = 1979-05-27T07:32:00Z\n"));
                expected.push(format!("{}.{key}: ", section.name));
            }
        }
        let found = problems(&text, &[]);
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (problem, prefix) in found.iter().zip(&expected) {
            assert!(problem.starts_with(prefix), "{problem} / {prefix}");
        }
    }
}
