//! The embedded node's libp2p identity on disk (`identity.key`): loaded,
//! or created once (written atomically, owner-readable only).

use std::path::Path;

use libp2p::identity;

use super::EmbeddedError;

/// The keypair in `path`, created there when missing.
pub(super) fn load_or_create(path: &Path) -> Result<identity::Keypair, EmbeddedError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            identity::Keypair::from_protobuf_encoding(&bytes).map_err(|_| EmbeddedError::Identity {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = identity::Keypair::generate_ed25519();
            let io = |what, source| EmbeddedError::Io {
                what,
                path: path.to_path_buf(),
                source,
            };
            // An ed25519 keypair always encodes.
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| io("encode", std::io::Error::other(e)))?;
            let tmp = path.with_extension("tmp");
            {
                use std::io::Write;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp).map_err(|e| io("write", e))?;
                f.write_all(&bytes).map_err(|e| io("write", e))?;
                f.sync_all().map_err(|e| io("write", e))?;
            }
            std::fs::rename(&tmp, path).map_err(|e| io("write", e))?;
            Ok(keypair)
        }
        Err(source) => Err(EmbeddedError::Io {
            what: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}
