//! A peer's configuration directory (DESIGN §9): `identity.json`, the peer's
//! own key pair, and `service.toml`, the settings every peer of a cluster
//! shares (with `PINFLEET_<SECTION>_<KEY>` environment overrides).
//!
//! This module owns reading, validating and writing those two files and
//! `pinfleet init`. It starts nothing: the daemon builds its components from
//! a loaded [`ServiceConfig`] and [`Identity`].
//!
//! Both files hold secrets (the private key, the cluster secret), so they are
//! written readable by their owner only and never printed in errors or
//! `Debug` output.

mod access;
mod codec;
mod env;
mod follow;
mod identity;
mod load;
mod pinsvc;
mod reference;
mod render;
mod size;
mod types;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use libp2p::PeerId;

pub use env::{ENV_PREFIX, env_var_name, process_env};
pub use follow::{
    FOLLOW_FILE, FOLLOW_FORMAT, FollowConfig, FollowError, TrustedPeer, init_follower,
};
pub use identity::{Identity, IdentityError};
pub use load::ConfigError;
pub use pinsvc::{MIN_TOKEN_CHARS, PinSvcConfig, PinSvcToken};
pub use reference::reference_markdown;
pub use types::{
    ApiConfig, ClusterConfig, ClusterSecret, ConsensusConfig, ControllerConfig, InformerConfig,
    IpfsBackendKind, IpfsConfig, PUBLIC_BOOTSTRAP, ServiceConfig, SwarmKind, TlsConfig,
};

/// File name of a peer's identity inside its config directory.
pub const IDENTITY_FILE: &str = "identity.json";

/// File name of the shared service config inside a config directory.
pub const SERVICE_FILE: &str = "service.toml";

/// What `init` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    /// The new peer's id.
    pub peer_id: PeerId,
    /// Where its identity was written.
    pub identity_path: PathBuf,
    /// The service config (written now, or already there).
    pub service_path: PathBuf,
    /// False when an existing `service.toml` was kept.
    pub wrote_service: bool,
}

/// Why `init` did nothing, or stopped part way.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The given secret is not 64 hex characters.
    #[error("invalid secret: {reason}")]
    InvalidSecret {
        /// What is wrong with it (the secret itself is not repeated).
        reason: String,
    },
    /// The directory could not be created.
    #[error("cannot create config directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A file exists and `force` was not given.
    #[error("{} already exists; use --force to overwrite it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// `service.toml` exists (so only the identity would be written), but a
    /// secret or peer name was given, which would be silently ignored.
    #[error(
        "{} already exists, so the given secret and peer name would not be used; \
         edit it, or use --force to overwrite it",
        path.display()
    )]
    SettingsIgnored {
        /// The existing service config.
        path: PathBuf,
    },
    /// `service.toml` could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// `identity.json` could not be written.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Creates `dir` (if needed) with a fresh `identity.json` and a
/// `service.toml` holding every default, `secret` (64 hex characters; a fresh
/// random one when `None`) and `peername`.
///
/// Without `force`, an existing `identity.json` is an error. An existing
/// `service.toml` on its own is not: that is how a config shared by all
/// peers is used (copy it in, then `init`), so only the identity is written
/// and the file is left as it is, unchecked — `daemon` validates it. Giving a
/// secret or peer name in that case is an error rather than silently
/// ignoring them. With `force` both files are replaced.
///
/// `service.toml` is written first, so if writing the identity fails a rerun
/// only has to add the identity.
pub fn init(
    dir: &Path,
    force: bool,
    secret: Option<&str>,
    peername: Option<&str>,
) -> Result<InitReport, InitError> {
    let secret_given = secret.is_some();
    let secret = match secret {
        Some(hex) => {
            ClusterSecret::parse_hex(hex).map_err(|reason| InitError::InvalidSecret { reason })?
        }
        None => ClusterSecret::random(),
    };
    let identity_path = dir.join(IDENTITY_FILE);
    let service_path = dir.join(SERVICE_FILE);

    // Everything that can refuse is checked before anything is written.
    let write_service = force || !service_path.exists();
    if !force {
        if identity_path.exists() {
            return Err(InitError::Exists {
                path: identity_path,
            });
        }
        if !write_service && (secret_given || peername.is_some()) {
            return Err(InitError::SettingsIgnored { path: service_path });
        }
    }

    std::fs::create_dir_all(dir).map_err(|source| InitError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    if write_service {
        let mut config = new_cluster_config(secret);
        if let Some(name) = peername {
            config.cluster.peername = name.to_owned();
        }
        write_private_file(&service_path, config.to_toml().as_bytes(), force).map_err(
            |source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    InitError::Exists {
                        path: service_path.clone(),
                    }
                } else {
                    InitError::Write {
                        path: service_path.clone(),
                        source,
                    }
                }
            },
        )?;
    }
    let identity = Identity::generate();
    identity.save(&identity_path, force)?;
    Ok(InitReport {
        peer_id: identity.peer_id(),
        identity_path,
        service_path,
        wrote_service: write_service,
    })
}

/// The `service.toml` `init` writes: every default, `secret`, and the
/// embedded node on the IPFS network (a file without that key stays
/// private, as clusters made before it).
fn new_cluster_config(secret: ClusterSecret) -> ServiceConfig {
    let mut config = ServiceConfig::new(secret);
    config.ipfs.swarm = SwarmKind::Public;
    config.ipfs.bootstrap = PUBLIC_BOOTSTRAP
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    config
}

/// Writes `bytes` to `path`, readable and writable by the owner only (0600 on
/// unix). Without `force` the file must not exist (checked atomically); with
/// it, the file is replaced atomically through a temporary file beside it.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8], force: bool) -> io::Result<()> {
    if !force {
        let mut file = open_private(path, true)?;
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        if written.is_err() {
            // Do not leave a truncated file that would block the next try.
            let _ = std::fs::remove_file(path);
        }
        return written;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = open_private(&tmp, false).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn open_private(path: &Path, create_new: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    // `mode` only applies to new files; a left-over temporary file keeps its
    // old mode otherwise.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn init_writes_a_loadable_identity_and_config() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("peer");
        let report = init(&dir, false, Some(SECRET), Some("peer-a")).unwrap();
        assert!(report.wrote_service);
        assert_eq!(report.identity_path, dir.join(IDENTITY_FILE));
        assert_eq!(report.service_path, dir.join(SERVICE_FILE));
        let identity = Identity::load(&report.identity_path).unwrap();
        assert_eq!(identity.peer_id(), report.peer_id);
        let config = ServiceConfig::load_with_env(&report.service_path, &[]).unwrap();
        assert_eq!(config.cluster.secret.to_hex(), SECRET);
        assert_eq!(config.cluster.peername, "peer-a");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&report.service_path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "service.toml holds the secret");
        }
    }

    #[test]
    fn init_makes_a_fresh_secret_each_time() {
        let tmp = tempfile::tempdir().unwrap();
        let a = init(&tmp.path().join("a"), false, None, None).unwrap();
        let b = init(&tmp.path().join("b"), false, None, None).unwrap();
        let secret = |r: &InitReport| {
            ServiceConfig::load_with_env(&r.service_path, &[])
                .unwrap()
                .cluster
                .secret
        };
        assert_ne!(secret(&a), secret(&b));
        assert_ne!(a.peer_id, b.peer_id);
    }

    #[test]
    fn init_twice_refuses_and_force_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let first = init(tmp.path(), false, None, None).unwrap();
        let err = init(tmp.path(), false, None, None).unwrap_err();
        assert!(matches!(err, InitError::Exists { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(IDENTITY_FILE) && text.contains("--force"),
            "{text}"
        );
        assert_eq!(
            Identity::load(&first.identity_path).unwrap().peer_id(),
            first.peer_id
        );

        let second = init(tmp.path(), true, Some(SECRET), None).unwrap();
        assert_ne!(second.peer_id, first.peer_id);
        assert!(second.wrote_service);
        assert_eq!(
            Identity::load(&second.identity_path).unwrap().peer_id(),
            second.peer_id
        );
        let config = ServiceConfig::load_with_env(&second.service_path, &[]).unwrap();
        assert_eq!(config.cluster.secret.to_hex(), SECRET);
        // No temporary files left behind.
        let mut names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, [IDENTITY_FILE, SERVICE_FILE]);
    }

    #[test]
    fn init_with_a_shared_config_writes_only_the_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = ServiceConfig::default_toml(SECRET);
        std::fs::write(tmp.path().join(SERVICE_FILE), &shared).unwrap();
        let report = init(tmp.path(), false, None, None).unwrap();
        assert!(!report.wrote_service);
        assert!(report.identity_path.exists());
        assert_eq!(
            std::fs::read_to_string(&report.service_path).unwrap(),
            shared
        );
    }

    #[test]
    fn init_will_not_ignore_settings_for_a_kept_config() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(SERVICE_FILE),
            ServiceConfig::default_toml(SECRET),
        )
        .unwrap();
        let err = init(tmp.path(), false, None, Some("peer-a")).unwrap_err();
        assert!(matches!(err, InitError::SettingsIgnored { .. }), "{err:?}");
        assert!(!tmp.path().join(IDENTITY_FILE).exists());
    }

    #[test]
    fn init_rejects_a_bad_secret_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("peer");
        let err = init(&dir, false, Some("not-hex"), None).unwrap_err();
        assert!(matches!(err, InitError::InvalidSecret { .. }), "{err:?}");
        assert!(!err.to_string().contains("not-hex"));
        assert!(!dir.exists());
    }
}
