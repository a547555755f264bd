//! Helpers shared by the integration-test modules.

use std::path::{Path, PathBuf};

/// A path inside the repository, whatever the test's working directory.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Writes `files` (path relative to `root`, content) under `root`, creating
/// parent directories as needed.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
    }
}

/// The sha2-256 multihash of `seed`'s bytes: distinct seeds give distinct,
/// real CIDs.
fn multihash(seed: &str) -> cid::multihash::Multihash<64> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    cid::multihash::Multihash::wrap(0x12, &digest).unwrap()
}

/// A CIDv1 (dag-pb, sha2-256, base32: `bafy…`) derived from `seed`.
pub fn cid_v1(seed: &str) -> String {
    cid::Cid::new_v1(0x70, multihash(seed)).to_string()
}

/// The CIDv0 (`Qm…`) spelling of `cid_v1(seed)`.
pub fn cid_v0(seed: &str) -> String {
    cid::Cid::new_v0(multihash(seed)).unwrap().to_string()
}
