//! `[pinsvc]`: the Pinning Service API listener and its bearer tokens
//! (`name = "TOKEN"` or `name = "ROLE:TOKEN"`).
//!
//! Owns the section's shape and its tokens' own checks; the rule that
//! spans keys (a non-loopback `listen` needs tokens) is `load`'s. A message
//! never repeats a token, and `Debug` never prints one.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use toml::Value;

use super::codec::{Codec, OptionalSocketAddress, describe};
use crate::auth::Role;
use crate::manifest::shown;

/// Fewest characters a token has.
pub const MIN_TOKEN_CHARS: usize = 16;

/// `[pinsvc]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PinSvcConfig {
    /// Where the Pinning Service API listens (TLS as `[api]`); `None`
    /// disables it. Without tokens nothing is served.
    #[serde(with = "OptionalSocketAddress")]
    pub listen: Option<SocketAddr>,
    /// Bearer tokens by name; pins a token requests are owned by
    /// `pinsvc:<name>`.
    #[serde(with = "Tokens")]
    pub tokens: BTreeMap<String, PinSvcToken>,
}

impl Default for PinSvcConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9097))),
            tokens: BTreeMap::new(),
        }
    }
}

/// One bearer token of the Pinning Service API.
#[derive(Clone, PartialEq, Eq)]
pub struct PinSvcToken {
    /// The secret a client sends as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// What it may do: `reader` lists and reads only; `writer` (the
    /// default) and `admin` also create, replace and delete.
    pub role: Role,
}

/// Redacted: the secret is never printed.
impl fmt::Debug for PinSvcToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinSvcToken({}, ..)", self.role)
    }
}

impl PinSvcToken {
    /// Parses `TOKEN` or `ROLE:TOKEN` (a prefix before the first `:` that
    /// is not a role is part of the token).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (role, secret) = match text.split_once(':') {
            Some((r, rest)) if Role::parse(r).is_some() => (Role::parse(r), rest),
            _ => (None, text),
        };
        if secret.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!(
                "a token has at least {MIN_TOKEN_CHARS} characters (optionally after \"reader:\", \"writer:\" or \"admin:\")"
            ));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a token cannot hold spaces or control characters".into());
        }
        Ok(Self {
            secret: secret.to_owned(),
            role: role.unwrap_or(Role::Writer),
        })
    }

    /// As written in the file.
    pub fn to_config(&self) -> String {
        format!("{}:{}", self.role, self.secret)
    }
}

/// `tokens`: a table of `name = "[ROLE:]TOKEN"`; a bad entry is named by
/// its name, never by its value.
pub(super) struct Tokens;

impl Codec for Tokens {
    type Field = BTreeMap<String, PinSvcToken>;

    fn read(value: &Value) -> Result<Self::Field, String> {
        let Some(table) = value.as_table() else {
            return Err(format!(
                "expected a table like {{ kubo = \"writer:<token>\" }}, found {}",
                describe(value)
            ));
        };
        let mut tokens = BTreeMap::new();
        let mut bad = Vec::new();
        for (name, v) in table {
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                bad.push(format!(
                    "{}: a token name has 1 to 64 characters, no control characters",
                    shown(name)
                ));
                continue;
            }
            match v.as_str().map(PinSvcToken::parse) {
                Some(Ok(t)) => {
                    tokens.insert(name.clone(), t);
                }
                Some(Err(e)) => bad.push(format!("{}: {e}", shown(name))),
                None => bad.push(format!(
                    "{}: expected a string, found {}",
                    shown(name),
                    describe(v)
                )),
            }
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, t) in &tokens {
            if let Some(other) = seen.insert(t.secret.as_str(), name.as_str()) {
                bad.push(format!(
                    "{} and {}: two names cannot share a token",
                    shown(other),
                    shown(name)
                ));
            }
        }
        if bad.is_empty() {
            Ok(tokens)
        } else {
            Err(bad.join("; "))
        }
    }

    fn write(field: &Self::Field) -> Value {
        Value::Table(
            field
                .iter()
                .map(|(n, t)| (n.clone(), Value::String(t.to_config())))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_takes_an_optional_role_prefix_and_defaults_to_writer() {
        let t = PinSvcToken::parse("reader:0123456789abcdef").unwrap();
        assert_eq!(
            (t.role, t.secret.as_str()),
            (Role::Reader, "0123456789abcdef")
        );
        let t = PinSvcToken::parse("x:0123456789abcdef").unwrap();
        assert_eq!(
            (t.role, t.secret.as_str()),
            (Role::Writer, "x:0123456789abcdef")
        );
        assert!(PinSvcToken::parse("admin:short").is_err());
        assert!(PinSvcToken::parse("0123456789 abcdef").is_err());
    }

    #[test]
    fn token_errors_and_debug_never_show_the_secret() {
        let v: Value = toml::from_str("a = \"reader:shhh secret value\"\nb = 3").unwrap();
        let e = Tokens::read(&v).unwrap_err();
        assert!(!e.contains("shhh"), "{e}");
        let t = PinSvcToken::parse("0123456789abcdefXYZ").unwrap();
        assert!(!format!("{t:?}").contains("XYZ"));
        let dup: Value =
            toml::from_str("a = \"0123456789abcdef\"\nb = \"reader:0123456789abcdef\"").unwrap();
        let e = Tokens::read(&dup).unwrap_err();
        assert!(
            e.contains("cannot share") && !e.contains("0123456789abcdef"),
            "{e}"
        );
    }
}
