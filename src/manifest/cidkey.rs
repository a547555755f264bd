//! CID identity: v0 and v1 strings that name the same content map to one key.

use std::fmt;
use std::str::FromStr;

use cid::Cid;

/// The identity of a pin: a CID normalised to version 1. Displays as
/// canonical base32 (`bafy…`). The string a user wrote is kept elsewhere for
/// display; two spellings of the same CID compare equal here.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CidKey(Cid);

/// Why a string is not a CID.
#[derive(Debug, thiserror::Error)]
#[error("invalid CID {input}: {reason}")]
pub struct CidError {
    /// The input as [`shown`](super::shown) quotes it.
    input: String,
    reason: String,
}

impl CidKey {
    /// Parses a v0 (`Qm…`) or v1 CID string.
    pub fn parse(s: &str) -> Result<Self, CidError> {
        let err = |reason: String| CidError {
            input: super::shown(s).to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty string".into()));
        }
        if s.trim() != s {
            return Err(err("surrounding whitespace".into()));
        }
        let cid = Cid::try_from(s).map_err(|e| err(e.to_string()))?;
        Self::from_cid(cid).map_err(|e| err(e.to_string()))
    }

    /// Normalises a parsed CID to version 1.
    pub fn from_cid(cid: Cid) -> Result<Self, cid::Error> {
        Ok(Self(cid.into_v1()?))
    }

    /// The normalised CID.
    pub fn cid(&self) -> &Cid {
        &self.0
    }

    /// The CIDv0 spelling, when this CID has one (dag-pb, sha2-256).
    pub fn to_v0_string(&self) -> Option<String> {
        const DAG_PB: u64 = 0x70;
        const SHA2_256: u64 = 0x12;
        let mh = self.0.hash();
        if self.0.codec() != DAG_PB || mh.code() != SHA2_256 || mh.size() != 32 {
            return None;
        }
        Cid::new_v0(*mh).ok().map(|c| c.to_string())
    }
}

impl FromStr for CidKey {
    type Err = CidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for CidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl serde::Serialize for CidKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CidKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for CidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CidKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    #[test]
    fn v0_and_v1_are_one_identity() {
        let v0 = CidKey::parse(V0).unwrap();
        let v1 = CidKey::parse(&v0.to_string()).unwrap();
        assert_eq!(v0, v1);
        assert!(v0.to_string().starts_with("bafy"));
        assert_eq!(v1.to_v0_string().as_deref(), Some(V0));
    }

    #[test]
    fn garbage_is_rejected_with_the_input() {
        let e = CidKey::parse("bafy-not-a-cid").unwrap_err().to_string();
        assert!(e.contains("bafy-not-a-cid"), "{e}");
        assert!(CidKey::parse("").is_err());
        assert!(CidKey::parse(" QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG").is_err());
    }
}
