//! The service config reference page (`docs/reference/config.md`, printed
//! by `pinfleet reference config`): every section and key of
//! `service.toml` with its kind, default, environment variable and
//! description, and the fields of a published follower config.
//!
//! Everything on the page is read from what the file is written from —
//! the sections and keys from [`schema`], the defaults from
//! `ServiceConfig::unset()`, the descriptions from [`DOCS`] and
//! [`FOLLOW_DOCS`] — so a test that compares the committed page with this
//! output catches every drift.

use std::fmt::Write as _;

use super::env::env_var_name;
use super::follow::{FOLLOW_DOCS, sample_json};
use super::render::{DOCS, Kind, document, schema};
use super::types::ServiceConfig;
use crate::manifest::duration::parse_duration;
use crate::markdown;

/// The command that prints the page, named in its header.
const COMMAND: &str = "pinfleet reference config";

/// What the page says before the sections.
const INTRO: &str = "\
`service.toml` is the configuration every peer of a cluster shares; it sits in the peer \
directory next to `identity.json` (`pinfleet init` writes it, every key at its default and \
commented). Every key but `cluster.secret` is optional: a missing key takes the default below. \
[cluster.md](../cluster.md) explains how peers use it.

Any key can be overridden by the environment variable in its row \
(`PINFLEET_<SECTION>_<KEY>`, e.g. `PINFLEET_API_LISTEN=127.0.0.1:0`): lists are \
comma-separated, tables `k=v,k=v` (or `k=v;k=v` when a value holds commas). Durations are \
Go-style: `250ms`, `30s`, `5m`, `1h30m`. `pinfleet daemon` checks the whole file and reports \
every problem at once, each naming its key or variable.";

/// The Markdown page.
pub fn reference_markdown() -> String {
    let defaults = document(&ServiceConfig::unset());
    let mut md = String::new();
    md.push_str("# service.toml reference\n\n");
    let _ = writeln!(
        md,
        "Generated from the code by `{COMMAND}`; do not edit. A test fails when it drifts.\n"
    );
    md.push_str(INTRO);
    md.push_str("\n\n## Contents\n\n");
    for section in schema() {
        let heading = format!("[{}]", section.name);
        let _ = writeln!(
            md,
            "- [`{heading}`](#{}) — {}",
            markdown::anchor(&heading),
            markdown::text(about(&section.name))
        );
    }
    let _ = writeln!(
        md,
        "- [{FOLLOW_HEADING}](#{})",
        markdown::anchor(FOLLOW_HEADING)
    );
    for section in schema() {
        let name = section.name.as_str();
        let _ = write!(
            md,
            "\n## [{name}]\n\n{}\n\n\
             | key | kind | default | environment variable | description |\n\
             |---|---|---|---|---|\n",
            markdown::text(about(name))
        );
        for (key, kind) in &section.keys {
            let default = defaults[name][key.as_str()]
                .as_value()
                .map(|v| v.to_string().trim().to_owned())
                .unwrap_or_default();
            let shown = if name == "cluster" && key == "secret" {
                "none (required)".to_owned()
            } else {
                markdown::code(&default)
            };
            let _ = writeln!(
                md,
                "| `{key}` | {} | {shown} | `{}` | {} |",
                kind_name(*kind, &default),
                env_var_name(name, key),
                markdown::cell(key_doc(name, key)),
            );
        }
    }
    follow_section(&mut md);
    md
}

const FOLLOW_HEADING: &str = "follow.json: the published follower config";

/// The fields of `follow.json`, which `pinfleet cluster publish` writes and
/// `pinfleet follow` / `init --follower` read (no environment overrides).
fn follow_section(md: &mut String) {
    let _ = write!(
        md,
        "\n## {FOLLOW_HEADING}\n\n\
         What a collaborative cluster hands out to followers \
         ([collaborative.md](../collaborative.md)): written by `pinfleet cluster publish`, read by \
         `pinfleet follow` and `pinfleet init --follower --cluster`, which turn it into a \
         follower's `service.toml`. JSON, every field required but `addrs`; it holds the \
         secret, so publish it only to those who may join the swarm. For example:\n\n\
         ```json\n{}```\n\n\
         | field | description |\n|---|---|\n",
        sample_json()
    );
    for (field, about) in FOLLOW_DOCS {
        let _ = writeln!(md, "| `{field}` | {} |", markdown::cell(about));
    }
}

/// The comment of `section`.
fn about(section: &str) -> &'static str {
    DOCS.iter()
        .find(|(name, ..)| *name == section)
        .map_or("", |(_, about, _)| about)
}

/// The comment of `section.key`.
fn key_doc(section: &str, key: &str) -> &'static str {
    DOCS.iter()
        .find(|(name, ..)| *name == section)
        .and_then(|(_, _, keys)| keys.iter().find(|(k, _)| *k == key))
        .map_or("", |(_, about)| about)
}

/// What a key holds, for a reader: a string whose default is a duration is
/// a duration.
fn kind_name(kind: Kind, default: &str) -> &'static str {
    match kind {
        Kind::Text if parse_duration(default.trim_matches('"')).is_ok() => "duration",
        Kind::Text => "string",
        Kind::Integer => "integer",
        Kind::Bool => "boolean",
        Kind::List => "list of strings",
        Kind::Tags => "table of strings",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_row_with_its_default_and_variable() {
        let md = reference_markdown();
        for section in schema() {
            assert!(md.contains(&format!("\n## [{}]\n", section.name)), "{md}");
            for (key, _) in &section.keys {
                let var = env_var_name(&section.name, key);
                assert!(md.contains(&format!("| `{key}` |")), "{key}");
                assert!(md.contains(&format!("| `{var}` |")), "{var}");
            }
        }
        assert!(md.contains(
            "| `heartbeat_interval` | duration | `\"250ms\"` | `PINFLEET_CONSENSUS_HEARTBEAT_INTERVAL` |"
        ));
        assert!(md.contains("| `secret` | string | none (required) |"));
        assert!(md.contains("| `follower` | boolean | `false` |"));
        assert!(md.contains("/p2p/&lt;peer id&gt;"), "{md}");
    }
}
