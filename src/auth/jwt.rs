//! API tokens: compact JWS (RFC 7515) with HS256, as IPFS Cluster's
//! `POST /token` hands out, with `iss` the user (IPFS Cluster's claim),
//! `exp`, `iat` and pinfleet's `role`.
//!
//! IPFS Cluster keys a user's tokens with the user's plain password; pinfleet
//! stores only an argon2 hash, so a user's key is an HMAC of the user name
//! and stored hash under a key derived from the cluster secret. Every peer
//! of a cluster shares both, so a token from one peer works on all of them,
//! and a new password (or a removed user) revokes the user's tokens.
//!
//! Time is a parameter (unix seconds): nothing here reads a clock.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Identity, Role, Users};

type HmacSha256 = Hmac<Sha256>;

/// The only header pinfleet writes or reads.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Longest token read; anything longer is refused unread.
const MAX_TOKEN_BYTES: usize = 4096;

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user it was issued to (IPFS Cluster's `iss`).
    pub iss: String,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expires at (unix seconds).
    pub exp: u64,
    /// The role it grants, at most the user's own.
    pub role: Role,
}

/// Why a token is refused. The API answers every one the same way (401);
/// the distinction is for tests and debug logs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of a JSON HS256 JWS.
    #[error("malformed token")]
    Malformed,
    /// The user is unknown, or the signature does not match.
    #[error("invalid token")]
    Invalid,
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// The user cannot be issued that role (more than their own).
    #[error("role {0} is above the user's")]
    RoleAbove(Role),
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Role::parse(&text).ok_or_else(|| serde::de::Error::custom("unknown role"))
    }
}

/// The cluster-wide key tokens are derived from.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// The key of a cluster, from its 32-byte secret.
    pub fn from_cluster_secret(secret: &[u8; 32]) -> Self {
        Self(mac(secret, &[b"pinfleet api token key v1"]))
    }

    /// The key signing `user`'s tokens while their hash is `hash`.
    fn user_key(&self, user: &str, hash: &[u8]) -> [u8; 32] {
        mac(&self.0, &[user.as_bytes(), hash])
    }

    /// A token for `user` with `role` (at most the user's own), valid from
    /// `now` for `ttl_secs`.
    pub fn issue(
        &self,
        users: &Users,
        user: &str,
        role: Role,
        now: u64,
        ttl_secs: u64,
    ) -> Result<String, TokenError> {
        let cred = users.get(user).ok_or(TokenError::Invalid)?;
        if role > cred.role {
            return Err(TokenError::RoleAbove(role));
        }
        let claims = Claims {
            iss: user.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl_secs),
            role,
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Malformed)?;
        let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
        let key = self.user_key(user, cred.hash_bytes());
        let sig = mac(&key, &[signing_input.as_bytes()]);
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }

    /// Who `token` proves, at `now`. The granted role is the lower of the
    /// token's and the user's current one.
    pub fn verify(&self, users: &Users, token: &str, now: u64) -> Result<Identity, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: serde_json::Value = B64
            .decode(head)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(TokenError::Malformed)?;
        // Only HS256: "none" and every other algorithm are refused.
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Malformed);
        }
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let cred = users.get(&claims.iss).ok_or(TokenError::Invalid)?;
        let key = self.user_key(&claims.iss, cred.hash_bytes());
        let mut m = keyed(&key);
        m.update(head.as_bytes());
        m.update(b".");
        m.update(body.as_bytes());
        // Constant-time comparison.
        m.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(Identity {
            user: claims.iss,
            role: claims.role.min(cred.role),
        })
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(key).expect("hmac accepts any key length")
}

/// HMAC-SHA256 of the length-prefixed `parts` (so that `("ab", "c")` and
/// `("a", "bc")` differ).
fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = keyed(key);
    if let [single] = parts {
        m.update(single);
    } else {
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
    }
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::super::{Credential, hash_password};
    use super::*;

    fn users() -> Users {
        let line = |r: &str, p: &str| {
            Credential::parse(&format!("{r}:{}", hash_password(p).unwrap())).unwrap()
        };
        Users::new(
            [
                ("ann".to_owned(), line("admin", "a")),
                ("wes".to_owned(), line("writer", "w")),
            ]
            .into(),
        )
    }

    #[test]
    fn a_token_proves_its_user_until_it_expires() {
        let (u, k) = (users(), TokenKey::from_cluster_secret(&[7; 32]));
        let t = k.issue(&u, "wes", Role::Writer, 1000, 60).unwrap();
        let id = k.verify(&u, &t, 1059).unwrap();
        assert_eq!((id.user.as_str(), id.role), ("wes", Role::Writer));
        assert_eq!(k.verify(&u, &t, 1060), Err(TokenError::Expired));
        // A reduced token grants only its role.
        let r = k.issue(&u, "ann", Role::Reader, 1000, 60).unwrap();
        assert_eq!(k.verify(&u, &r, 1001).unwrap().role, Role::Reader);
        assert_eq!(
            k.issue(&u, "wes", Role::Admin, 1000, 60),
            Err(TokenError::RoleAbove(Role::Admin))
        );
        assert_eq!(
            k.issue(&u, "nobody", Role::Reader, 1000, 60),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn forged_or_foreign_tokens_are_refused() {
        let (u, k) = (users(), TokenKey::from_cluster_secret(&[7; 32]));
        let t = k.issue(&u, "wes", Role::Writer, 1000, 60).unwrap();
        // Another cluster's key.
        let other = TokenKey::from_cluster_secret(&[8; 32]);
        assert_eq!(other.verify(&u, &t, 1001), Err(TokenError::Invalid));
        // The claims changed (role raised), signature kept.
        let parts: Vec<&str> = t.split('.').collect();
        let raised = B64.encode(
            serde_json::to_vec(&Claims {
                iss: "wes".into(),
                iat: 1000,
                exp: 1060,
                role: Role::Admin,
            })
            .unwrap(),
        );
        let forged = format!("{}.{raised}.{}", parts[0], parts[2]);
        assert_eq!(k.verify(&u, &forged, 1001), Err(TokenError::Invalid));
        // alg none, no signature.
        let none = format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), parts[1]);
        assert_eq!(k.verify(&u, &none, 1001), Err(TokenError::Malformed));
        assert_eq!(k.verify(&u, "a.b", 1001), Err(TokenError::Malformed));
        assert_eq!(k.verify(&u, "", 1001), Err(TokenError::Malformed));
        // A new password revokes the user's tokens.
        let mut changed: std::collections::BTreeMap<String, Credential> = Default::default();
        changed.insert(
            "wes".into(),
            Credential::parse(&format!("writer:{}", hash_password("new").unwrap())).unwrap(),
        );
        assert_eq!(
            k.verify(&Users::new(changed), &t, 1001),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_token_grants_no_more_than_the_user_has_now() {
        let k = TokenKey::from_cluster_secret(&[7; 32]);
        let hash = hash_password("a").unwrap();
        let as_admin = Users::new(
            [(
                "ann".to_owned(),
                Credential::parse(&format!("admin:{hash}")).unwrap(),
            )]
            .into(),
        );
        let t = k.issue(&as_admin, "ann", Role::Admin, 0, 60).unwrap();
        // Same password, demoted to reader in config.
        let demoted = Users::new(
            [(
                "ann".to_owned(),
                Credential::parse(&format!("reader:{hash}")).unwrap(),
            )]
            .into(),
        );
        assert_eq!(k.verify(&demoted, &t, 1).unwrap().role, Role::Reader);
    }
}
