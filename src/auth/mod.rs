//! Who may use a peer's REST API (DESIGN §7, issue 13): roles, the users of
//! `[api] basic_auth_credentials` with their argon2 password hashes, and the
//! HS256 tokens `POST /token` hands out.
//!
//! This module owns identities and their proofs only: checking a password,
//! issuing and checking a token. It knows nothing of HTTP (the API's
//! `access` layer reads headers and maps answers to status codes) and never
//! logs or formats a password, a hash or a token.
//!
//! Failures never say why: an unknown user and a wrong password take the
//! same argon2 work and give the same answer, and every comparison of
//! secret bytes is constant-time (argon2's own check, HMAC's `verify`).

mod jwt;
mod passwords;

use std::fmt;

pub use jwt::{Claims, TokenError, TokenKey};
pub use passwords::{Credential, CredentialError, Users, hash_password};

/// What an identity may do, each role including the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Every `GET` route: pins, status, PinSets, peers, metrics.
    Reader,
    /// Reader, plus pins, PinSets, `/add`, recover and reconcile.
    Writer,
    /// Writer, plus peers, GC, tokens for others, `force=true` and PinSet
    /// condition writes.
    Admin,
}

impl Role {
    /// Every role, as written in config and tokens.
    pub const NAMES: [&'static str; 3] = ["reader", "writer", "admin"];

    /// The role as written in config and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Admin => "admin",
        }
    }

    /// Parses `reader`, `writer` or `admin`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reader" => Some(Self::Reader),
            "writer" => Some(Self::Writer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent a request, once proven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name (`pinfleet` for the peer's own controller, `anonymous`
    /// on an API without users).
    pub user: String,
    /// What it may do.
    pub role: Role,
}

impl Identity {
    /// The identity of every request on an API that has no users: it
    /// listens on loopback only (or was explicitly opened), so whoever
    /// reaches it is trusted as the machine's operator.
    pub fn anonymous() -> Self {
        Self {
            user: "anonymous".into(),
            role: Role::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Reader < Role::Writer && Role::Writer < Role::Admin);
        for name in Role::NAMES {
            assert_eq!(Role::parse(name).map(Role::as_str), Some(name));
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse(""), None);
    }
}
