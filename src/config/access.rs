//! Codecs of the `[api]` keys that decide who may use the REST API:
//! users (`name = "role:argon2-hash"`), public host names, and the CORS
//! origins and methods.
//!
//! Like `codec`, this module owns each value's own checks; the rule that
//! spans keys (a non-loopback `listen` needs users or an explicit opt-out)
//! is `load`'s. A message never repeats a password hash.

use std::collections::BTreeMap;

use toml::Value;

use super::codec::{Codec, describe, each_string};
use crate::auth::Credential;
use crate::manifest::shown;

/// `basic_auth_credentials`: a table of `user = "role:hash"`; every bad
/// entry is named by user, never by value.
pub(super) struct Users;

impl Codec for Users {
    type Field = BTreeMap<String, Credential>;

    fn read(value: &Value) -> Result<Self::Field, String> {
        let Some(table) = value.as_table() else {
            return Err(format!(
                "expected a table like {{ alice = \"writer:$argon2id$…\" }}, found {}",
                describe(value)
            ));
        };
        let mut users = BTreeMap::new();
        let mut bad = Vec::new();
        for (user, v) in table {
            if let Err(e) = check_user_name(user) {
                bad.push(format!("{}: {e}", shown(user)));
                continue;
            }
            match v.as_str().map(Credential::parse) {
                Some(Ok(c)) => {
                    users.insert(user.clone(), c);
                }
                Some(Err(e)) => bad.push(format!("{user}: {e}")),
                None => bad.push(format!("{user}: expected a string, found {}", describe(v))),
            }
        }
        if bad.is_empty() {
            Ok(users)
        } else {
            Err(bad.join("; "))
        }
    }

    fn write(field: &Self::Field) -> Value {
        Value::Table(
            field
                .iter()
                .map(|(u, c)| (u.clone(), Value::String(c.to_config())))
                .collect(),
        )
    }
}

/// A user name goes into `Authorization: Basic` (no `:`) and tokens.
fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a user name has 1 to 64 characters".into());
    }
    if name.contains(':') || name.chars().any(char::is_control) {
        return Err("a user name cannot hold ':' or control characters".into());
    }
    Ok(())
}

/// `public_names`: host names (no scheme, no port) the API answers to
/// besides loopback names and IP addresses.
pub(super) struct HostNames;

impl Codec for HostNames {
    type Field = Vec<String>;

    fn read(value: &Value) -> Result<Vec<String>, String> {
        each_string(value, "host names", |name| {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if ok {
                Ok(name.to_ascii_lowercase())
            } else {
                Err(format!(
                    "invalid host name {}: expected a DNS name like \"pins.example.org\" (no scheme, no port)",
                    shown(name)
                ))
            }
        })
    }

    fn write(field: &Vec<String>) -> Value {
        strings(field)
    }
}

/// `cors_allowed_origins`: `*` or origins `scheme://host[:port]`.
pub(super) struct Origins;

impl Codec for Origins {
    type Field = Vec<String>;

    fn read(value: &Value) -> Result<Vec<String>, String> {
        each_string(value, "origins", |origin| {
            if origin == "*" {
                return Ok(origin.to_owned());
            }
            let (scheme, rest) = origin.split_once("://").unwrap_or(("", origin));
            let ok = matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && !rest.contains('/')
                && !rest.contains('?');
            if ok {
                Ok(origin.to_ascii_lowercase())
            } else {
                Err(format!(
                    "invalid origin {}: expected \"*\" or scheme://host[:port] like \"https://dash.example.org\"",
                    shown(origin)
                ))
            }
        })
    }

    fn write(field: &Vec<String>) -> Value {
        strings(field)
    }
}

/// `cors_allowed_methods`: HTTP method names.
pub(super) struct Methods;

/// Methods a CORS request may be allowed.
const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

impl Codec for Methods {
    type Field = Vec<String>;

    fn read(value: &Value) -> Result<Vec<String>, String> {
        each_string(value, "HTTP methods", |m| {
            let upper = m.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                Ok(upper)
            } else {
                Err(super::codec::unknown_message("method", m, &METHODS))
            }
        })
    }

    fn write(field: &Vec<String>) -> Value {
        strings(field)
    }
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}
