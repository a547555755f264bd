//! IPFS paths (`/ipfs/<cid>/a/b`, `/ipns/<name>/…`, `/ipld/<cid>/…`): the
//! parsed form [`IpfsPath`] that [`IpfsBackend::resolve`](super::IpfsBackend::resolve)
//! takes, and one step of a dag-pb walk by link name (what the embedded
//! node resolves with).
//!
//! It owns syntax and the single step only: fetching blocks, timeouts and
//! IPNS belong to the backends.

use std::fmt;

use cid::Cid;

use super::IpfsError;
use crate::manifest::{CidKey, shown};

/// The multicodec of dag-pb.
const DAG_PB: u64 = 0x70;

/// Which namespace a path is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// `/ipfs/<cid>/…`: immutable content.
    Ipfs,
    /// `/ipns/<name>/…`: a mutable name (a key or a DNSLink domain).
    Ipns,
    /// `/ipld/<cid>/…`: IPLD data model paths.
    Ipld,
}

impl Namespace {
    /// The namespace as written in a path (`ipfs`, `ipns`, `ipld`).
    pub fn as_str(self) -> &'static str {
        match self {
            Namespace::Ipfs => "ipfs",
            Namespace::Ipns => "ipns",
            Namespace::Ipld => "ipld",
        }
    }

    /// The namespace written `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ipfs" => Some(Namespace::Ipfs),
            "ipns" => Some(Namespace::Ipns),
            "ipld" => Some(Namespace::Ipld),
            _ => None,
        }
    }
}

/// A parsed IPFS path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfsPath {
    namespace: Namespace,
    /// The CID (`/ipfs`, `/ipld`) or name (`/ipns`) the path starts at.
    root: String,
    /// The CID of `root`, for `/ipfs` and `/ipld`.
    root_cid: Option<CidKey>,
    /// Link names below the root.
    segments: Vec<String>,
}

/// Why a path does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {input}: {reason}")]
pub struct PathError {
    /// The path as given (quoted, shortened).
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl IpfsPath {
    /// Parses `/<namespace>/<root>[/<name>…]`. Empty segments (`a//b`, a
    /// trailing `/`) are dropped; `.` and `..` are refused rather than
    /// interpreted.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        let err = |reason: &str| PathError {
            input: shown(s).to_string(),
            reason: reason.to_string(),
        };
        let rest = s
            .strip_prefix('/')
            .ok_or_else(|| err("it must start with /ipfs/, /ipns/ or /ipld/"))?;
        let mut parts = rest.split('/').filter(|p| !p.is_empty());
        let namespace = parts
            .next()
            .and_then(Namespace::parse)
            .ok_or_else(|| err("its namespace must be ipfs, ipns or ipld"))?;
        let root = parts
            .next()
            .ok_or_else(|| err("it names no root"))?
            .to_string();
        let root_cid = match namespace {
            Namespace::Ipns => None,
            Namespace::Ipfs | Namespace::Ipld => {
                Some(CidKey::parse(&root).map_err(|e| PathError {
                    input: shown(s).to_string(),
                    reason: format!("its root is not a cid ({e})"),
                })?)
            }
        };
        let segments: Vec<String> = parts.map(str::to_string).collect();
        if segments.iter().any(|p| p == "." || p == "..") {
            return Err(err("it contains . or .. segments"));
        }
        Ok(Self {
            namespace,
            root,
            root_cid,
            segments,
        })
    }

    /// The namespace.
    pub fn namespace(&self) -> Namespace {
        self.namespace
    }

    /// The root CID of an `/ipfs` or `/ipld` path.
    pub fn root_cid(&self) -> Option<CidKey> {
        self.root_cid
    }

    /// The link names below the root, in order.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl fmt::Display for IpfsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/{}", self.namespace.as_str(), self.root)?;
        for s in &self.segments {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

/// The CID the link `name` of block `block` (CID `cid`) points to: a
/// dag-pb node's link of that name. Other codecs, HAMT-sharded
/// directories and missing names fail with [`IpfsError::Resolve`].
pub fn child_by_name(
    path: &IpfsPath,
    cid: &Cid,
    block: &[u8],
    name: &str,
) -> Result<Cid, IpfsError> {
    let fail = |reason: String| IpfsError::Resolve {
        path: path.to_string(),
        reason,
    };
    if cid.codec() != DAG_PB {
        return Err(fail(format!(
            "{cid} is not dag-pb (codec 0x{:x}): cannot walk to {}",
            cid.codec(),
            shown(name)
        )));
    }
    let node = super::dagpb::decode(block).map_err(|e| fail(format!("{cid}: {e}")))?;
    if let Some(data) = node.data.as_deref()
        && let Ok(d) = super::unixfs::UnixfsData::decode(data)
        && d.kind == super::unixfs::DataType::HamtShard
    {
        return Err(fail(format!(
            "{cid} is a HAMT-sharded directory, which this backend cannot walk"
        )));
    }
    node.links
        .iter()
        .find(|l| l.name.as_deref() == Some(name))
        .map(|l| l.hash)
        .ok_or_else(|| fail(format!("no link named {} under {cid}", shown(name))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";

    #[test]
    fn parses_the_three_namespaces_and_drops_empty_segments() {
        let p = IpfsPath::parse(&format!("/ipfs/{CID}/a//b/")).unwrap();
        assert_eq!(p.namespace(), Namespace::Ipfs);
        assert_eq!(p.segments(), ["a", "b"]);
        assert_eq!(p.to_string(), format!("/ipfs/{CID}/a/b"));
        assert!(p.root_cid().is_some());
        let p = IpfsPath::parse("/ipns/example.org/x").unwrap();
        assert_eq!(p.namespace(), Namespace::Ipns);
        assert_eq!(p.root_cid(), None);
        assert_eq!(
            IpfsPath::parse(&format!("/ipld/{CID}"))
                .unwrap()
                .namespace(),
            Namespace::Ipld
        );
    }

    #[test]
    fn refuses_malformed_paths() {
        for bad in [
            "",
            "ipfs/x",
            "/ipfs",
            "/ipfs/",
            "/ipfs/not-a-cid",
            "/ipld/zzz/a",
            "/foo/bar",
            &format!("/ipfs/{CID}/../x"),
            &format!("/ipfs/{CID}/./x"),
        ] {
            assert!(IpfsPath::parse(bad).is_err(), "{bad:?}");
        }
    }
}
