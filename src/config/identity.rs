//! A peer's identity: its libp2p key pair, stored in `identity.json`.
//!
//! The file layout is IPFS Cluster's, so an existing cluster peer's identity
//! can be reused as is:
//!
//! ```json
//! {"id": "12D3KooW…", "private_key": "<base64 of the protobuf-encoded key pair>"}
//! ```
//!
//! The identity is per peer and secret; it is kept apart from the shared
//! `service.toml`. This module owns reading and writing that file; it does not
//! decide where the file lives.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::{DecodingError, Keypair};
use serde::{Deserialize, Serialize};

/// A peer's key pair; the peer id is derived from its public half.
#[derive(Clone)]
pub struct Identity {
    /// The libp2p key pair (ed25519 for identities made by pinfleet; any type
    /// libp2p can decode is accepted on load).
    pub keypair: Keypair,
}

/// Why an identity file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read.
    #[error("cannot read identity file {}", path.display())]
    Read {
        /// The identity file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file is not the expected JSON.
    #[error("invalid identity file {}", path.display())]
    Json {
        /// The identity file.
        path: PathBuf,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// `id` is not a peer id.
    #[error("{}: id {id:?} is not a valid peer id", path.display())]
    InvalidId {
        /// The identity file.
        path: PathBuf,
        /// The value found.
        id: String,
    },
    /// `private_key` is not standard base64.
    #[error("{}: private_key is not valid base64: {reason}", path.display())]
    Base64 {
        /// The identity file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `private_key` decodes to bytes that are not a libp2p key pair.
    #[error("{}: private_key is not a libp2p private key", path.display())]
    Key {
        /// The identity file.
        path: PathBuf,
        /// What libp2p said.
        #[source]
        source: DecodingError,
    },
    /// `id` and `private_key` belong to different peers.
    #[error(
        "{}: id {id} does not match private_key, which belongs to {actual}",
        path.display()
    )]
    Mismatch {
        /// The identity file.
        path: PathBuf,
        /// The `id` written in the file (base58).
        id: String,
        /// The peer id of the key in the file (base58).
        actual: String,
    },
    /// The key pair cannot be encoded (a key type libp2p cannot serialise).
    #[error("cannot encode the private key for {}", path.display())]
    Encode {
        /// The identity file.
        path: PathBuf,
        /// What libp2p said.
        #[source]
        source: DecodingError,
    },
    /// Saving would overwrite an existing file and `force` was not given.
    #[error("{} already exists; use --force to overwrite it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The file could not be written.
    #[error("cannot write identity file {}", path.display())]
    Write {
        /// The identity file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// On-disk shape of `identity.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    id: String,
    private_key: String,
}

impl Identity {
    /// A fresh ed25519 identity.
    pub fn generate() -> Self {
        Self {
            keypair: Keypair::generate_ed25519(),
        }
    }

    /// The peer id derived from the public key.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// Reads `path` and checks that its `id` is the peer id of its key.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses the contents of an identity file; `path` is only used in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, IdentityError> {
        let file: IdentityFile =
            serde_json::from_str(text).map_err(|source| IdentityError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        let id: PeerId = file
            .id
            .trim()
            .parse()
            .map_err(|_| IdentityError::InvalidId {
                path: path.to_path_buf(),
                id: file.id.clone(),
            })?;
        let bytes =
            std_base64::decode(&file.private_key).map_err(|reason| IdentityError::Base64 {
                path: path.to_path_buf(),
                reason,
            })?;
        let keypair =
            Keypair::from_protobuf_encoding(&bytes).map_err(|source| IdentityError::Key {
                path: path.to_path_buf(),
                source,
            })?;
        let identity = Self { keypair };
        let actual = identity.peer_id();
        if actual != id {
            return Err(IdentityError::Mismatch {
                path: path.to_path_buf(),
                id: id.to_base58(),
                actual: actual.to_base58(),
            });
        }
        Ok(identity)
    }

    /// The contents of an identity file for this key pair (pretty JSON with a
    /// trailing newline); `path` is only used in errors.
    pub fn to_json(&self, path: &Path) -> Result<String, IdentityError> {
        let bytes =
            self.keypair
                .to_protobuf_encoding()
                .map_err(|source| IdentityError::Encode {
                    path: path.to_path_buf(),
                    source,
                })?;
        let file = IdentityFile {
            id: self.peer_id().to_base58(),
            private_key: std_base64::encode(&bytes),
        };
        // Serialising two strings cannot fail; map it anyway rather than panic.
        let mut json = serde_json::to_string_pretty(&file).map_err(|e| IdentityError::Write {
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?;
        json.push('\n');
        Ok(json)
    }

    /// Writes the identity to `path`, readable by its owner only (mode 0600 on
    /// unix). Refuses to replace an existing file unless `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), IdentityError> {
        let json = self.to_json(path)?;
        super::write_private_file(path, json.as_bytes(), force).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                IdentityError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                IdentityError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
    }
}

/// Shows the peer id only: the private key must never reach a log.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

/// Standard base64 (RFC 4648 §4, `+/`, `=` padding), as Go's
/// `base64.StdEncoding` writes it, through the `base64` crate.
mod std_base64 {
    use base64::DecodeError;
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    /// Encodes with padding.
    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    /// Decodes; padding is optional but must be complete when present,
    /// surrounding whitespace is ignored, anything else outside the alphabet
    /// is an error, and so are non-zero trailing bits (so two texts never
    /// decode alike).
    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        let text = text.trim();
        let engine = if text.ends_with('=') {
            &STANDARD
        } else {
            &STANDARD_NO_PAD
        };
        engine.decode(text).map_err(|e| match e {
            DecodeError::InvalidByte(offset, byte) => format!(
                "unexpected character {:?} at offset {offset}",
                char::from(byte)
            ),
            DecodeError::InvalidLength(len) => format!("bad length {len}"),
            DecodeError::InvalidLastSymbol(..) => "non-zero trailing bits".into(),
            DecodeError::InvalidPadding => "bad padding".into(),
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc4648_vectors() {
            let cases = [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
                ("fooba", "Zm9vYmE="),
                ("foobar", "Zm9vYmFy"),
            ];
            for (plain, encoded) in cases {
                assert_eq!(encode(plain.as_bytes()), encoded);
                assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
            }
            assert_eq!(decode("Zm9vYg").unwrap(), b"foob");
            assert_eq!(decode(" Zm9v\n").unwrap(), b"foo");
            assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
            assert_eq!(decode("+/8=").unwrap(), [0xfb, 0xff]);
        }

        #[test]
        fn round_trips_every_byte() {
            let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
            for n in 0..bytes.len() {
                assert_eq!(decode(&encode(&bytes[..n])).unwrap(), &bytes[..n]);
            }
        }

        #[test]
        fn rejects_garbage_and_says_why() {
            for (bad, why) in [
                ("Zm9v!", "unexpected character '!' at offset 4"),
                ("Z", "bad length"),
                ("Zm9vY===", ""),
                ("Zg=", ""),
                ("Zh==", "non-zero trailing bits"),
                ("Zm-v", "unexpected character '-' at offset 2"),
                ("Zm9v Zg==", "unexpected character ' ' at offset 4"),
            ] {
                let err = decode(bad).expect_err(bad);
                assert!(err.contains(why), "{bad:?}: {err}");
                assert!(err.chars().next().is_some_and(char::is_lowercase), "{err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_gives_the_same_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        let id = Identity::generate();
        id.save(&path, false).unwrap();
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.peer_id(), id.peer_id());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["id"], id.peer_id().to_base58());
        assert!(json["private_key"].is_string());
    }

    #[cfg(unix)]
    #[test]
    fn saved_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        Identity::generate().save(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Forcing over a world-readable file tightens it too.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Identity::generate().save(&path, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        let first = Identity::generate();
        first.save(&path, false).unwrap();
        let err = Identity::generate().save(&path, false).unwrap_err();
        assert!(matches!(err, IdentityError::Exists { .. }), "{err:?}");
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(err.to_string().contains("identity.json"), "{err}");
        assert_eq!(Identity::load(&path).unwrap().peer_id(), first.peer_id());

        let second = Identity::generate();
        second.save(&path, true).unwrap();
        assert_eq!(Identity::load(&path).unwrap().peer_id(), second.peer_id());
    }

    #[test]
    fn load_rejects_an_id_that_is_not_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        let mine = Identity::generate();
        let other = Identity::generate();
        let json = mine
            .to_json(&path)
            .unwrap()
            .replace(&mine.peer_id().to_base58(), &other.peer_id().to_base58());
        std::fs::write(&path, json).unwrap();
        let err = Identity::load(&path).unwrap_err();
        match &err {
            IdentityError::Mismatch { id, actual, .. } => {
                assert_eq!(*id, other.peer_id().to_base58());
                assert_eq!(*actual, mine.peer_id().to_base58());
            }
            e => panic!("expected a mismatch, got {e:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("identity.json") && text.contains("does not match"),
            "{text}"
        );
    }

    #[test]
    fn load_names_the_file_in_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        let id = Identity::generate().peer_id().to_base58();
        let cases = [
            "not json".to_string(),
            r#"{"id": "x", "private_key": "AAAA"}"#.to_string(),
            format!(r#"{{"id": "{id}", "private_key": "!!!"}}"#),
            format!(r#"{{"id": "{id}", "private_key": "AAAA"}}"#),
            format!(r#"{{"id": "{id}", "private_key": "AAAA", "extra": 1}}"#),
        ];
        for case in cases {
            std::fs::write(&path, &case).unwrap();
            let err = Identity::load(&path).unwrap_err();
            assert!(err.to_string().contains("identity.json"), "{case}: {err}");
        }
        let missing = dir.path().join("nope.json");
        let err = Identity::load(&missing).unwrap_err();
        assert!(matches!(err, IdentityError::Read { .. }));
        assert!(err.to_string().contains("nope.json"));
    }

    #[test]
    fn debug_does_not_leak_the_key() {
        let id = Identity::generate();
        let debug = format!("{id:?}");
        assert!(debug.contains(&id.peer_id().to_base58()));
        let key = id.to_json(Path::new("x")).unwrap();
        let key: serde_json::Value = serde_json::from_str(&key).unwrap();
        assert!(!debug.contains(key["private_key"].as_str().unwrap()));
    }
}
