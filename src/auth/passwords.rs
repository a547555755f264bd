//! Basic-auth users: `name = "role:argon2-hash"` in `[api]
//! basic_auth_credentials`, checked with argon2 (the hash's own parameters)
//! and a small cache of recent successes, so that a client sending the same
//! credentials on every request pays the argon2 cost once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sha2::{Digest, Sha256};

use super::Role;

/// One user's role and password hash (a PHC string, `$argon2id$…`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// What the user may do.
    pub role: Role,
    hash: String,
}

/// Redacted: a hash is not a password, but it is what an offline attack
/// starts from, so it is never printed.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, ..)", self.role)
    }
}

/// Why a `role:hash` value does not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    /// No `:` between role and hash.
    #[error(
        "expected \"ROLE:HASH\" (ROLE one of reader, writer, admin; HASH from `pinfleet passwd`)"
    )]
    Shape,
    /// The role is not one of the three.
    #[error("unknown role {0:?}: expected one of reader, writer, admin")]
    Role(String),
    /// The hash is not an argon2 PHC string.
    #[error("the password hash is not an argon2 hash (`pinfleet passwd` prints one)")]
    Hash,
}

impl Credential {
    /// Reads `role:hash` (as written in config). The hash must be an argon2
    /// (`argon2id`, `argon2i` or `argon2d`) PHC string; plain-text passwords
    /// are refused.
    pub fn parse(text: &str) -> Result<Self, CredentialError> {
        let (role, hash) = text.split_once(':').ok_or(CredentialError::Shape)?;
        let role = Role::parse(role.trim()).ok_or_else(|| CredentialError::Role(role.into()))?;
        let hash = hash.trim();
        let parsed = PasswordHash::new(hash).map_err(|_| CredentialError::Hash)?;
        if !parsed.algorithm.as_str().starts_with("argon2") || parsed.hash.is_none() {
            return Err(CredentialError::Hash);
        }
        Ok(Self {
            role,
            hash: hash.to_owned(),
        })
    }

    /// `role:hash`, as written in config.
    pub fn to_config(&self) -> String {
        format!("{}:{}", self.role, self.hash)
    }

    /// The stored hash, as bytes to derive this user's token key from (a
    /// new password revokes the user's tokens).
    pub(super) fn hash_bytes(&self) -> &[u8] {
        self.hash.as_bytes()
    }

    fn verify(&self, password: &str) -> bool {
        PasswordHash::new(&self.hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    }
}

/// An argon2id hash of `password` with a fresh random salt and argon2's
/// default parameters, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// What an unknown user's password is checked against, so that it costs
/// the same as a known user's.
static DECOY: LazyLock<Option<Credential>> = LazyLock::new(|| {
    let hash = hash_password("pinfleet decoy password").ok()?;
    Credential::parse(&format!("reader:{hash}")).ok()
});

/// Most cached successes; the cache is emptied when full.
const CACHE_MAX: usize = 1024;

/// The users of one API and the successes already checked.
#[derive(Clone, Default)]
pub struct Users {
    users: Arc<BTreeMap<String, Credential>>,
    /// SHA-256 of (user, password, hash) → role, for credentials that
    /// verified. Keyed by a digest so the cache holds no password.
    ok: Arc<Mutex<HashMap<[u8; 32], Role>>>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("names", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Users {
    /// The users of `[api] basic_auth_credentials`.
    pub fn new(users: BTreeMap<String, Credential>) -> Self {
        Self {
            users: Arc::new(users),
            ok: Arc::default(),
        }
    }

    /// No users: the API is open (to whoever can reach it).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user's credential, if there is such a user.
    pub fn get(&self, user: &str) -> Option<&Credential> {
        self.users.get(user)
    }

    /// The role of `user` when `password` is theirs. Blocking (argon2 takes
    /// tens of milliseconds): call it off the async runtime. An unknown user
    /// costs the same as a wrong password.
    pub fn verify(&self, user: &str, password: &str) -> Option<Role> {
        let known = self.users.get(user);
        let key = cache_key(user, password, known);
        if known.is_some()
            && let Some(role) = self.cached(&key)
        {
            return Some(role);
        }
        let (cred, real) = match known {
            Some(c) => (c, true),
            None => (DECOY.as_ref()?, false),
        };
        if !(cred.verify(password) && real) {
            return None;
        }
        if let Ok(mut ok) = self.ok.lock() {
            if ok.len() >= CACHE_MAX {
                ok.clear();
            }
            ok.insert(key, cred.role);
        }
        Some(cred.role)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Role> {
        self.ok.lock().ok()?.get(key).copied()
    }
}

fn cache_key(user: &str, password: &str, cred: Option<&Credential>) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        user.as_bytes(),
        password.as_bytes(),
        cred.map(Credential::hash_bytes).unwrap_or_default(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(pairs: &[(&str, Role, &str)]) -> Users {
        Users::new(
            pairs
                .iter()
                .map(|(u, r, p)| {
                    let c = Credential::parse(&format!("{r}:{}", hash_password(p).unwrap()));
                    ((*u).to_owned(), c.unwrap())
                })
                .collect(),
        )
    }

    #[test]
    fn a_password_verifies_only_for_its_user() {
        let u = users(&[("ann", Role::Writer, "pw-a"), ("bob", Role::Reader, "pw-b")]);
        assert_eq!(u.verify("ann", "pw-a"), Some(Role::Writer));
        // Twice: the second answer comes from the cache and must agree.
        assert_eq!(u.verify("ann", "pw-a"), Some(Role::Writer));
        assert_eq!(u.verify("bob", "pw-b"), Some(Role::Reader));
        assert_eq!(u.verify("ann", "pw-b"), None);
        assert_eq!(u.verify("bob", "pw-a"), None);
        assert_eq!(u.verify("carl", "pw-a"), None);
        assert_eq!(u.verify("ann", ""), None);
    }

    #[test]
    fn config_values_are_checked_and_never_plain_text() {
        let hash = hash_password("x").unwrap();
        let c = Credential::parse(&format!("admin:{hash}")).unwrap();
        assert_eq!(c.role, Role::Admin);
        assert_eq!(c.to_config(), format!("admin:{hash}"));
        assert!(!format!("{c:?}").contains(&hash));
        assert_eq!(
            Credential::parse("admin:hunter2"),
            Err(CredentialError::Hash)
        );
        assert_eq!(Credential::parse(&hash), Err(CredentialError::Shape));
        assert_eq!(
            Credential::parse(&format!(":{hash}")),
            Err(CredentialError::Role(String::new()))
        );
        assert_eq!(Credential::parse("nohash"), Err(CredentialError::Shape));
        assert!(matches!(
            Credential::parse(&format!("root:{hash}")),
            Err(CredentialError::Role(r)) if r == "root"
        ));
    }
}
