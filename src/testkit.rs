//! Deterministic test data shared by unit tests, integration tests and
//! benchmarks: CIDs numbered 0, 1, 2… and PinSets over ranges of them.
//! Not used by the product itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::manifest::{CidKey, DesiredPin, DesiredPinSet, PinOptions, PinSetId, PinSpec, Pos, SourceRef};

/// The `i`-th test CID: CIDv1 raw, sha2-256 multihash whose digest starts
/// with `i` (little endian). Distinct for distinct `i`, valid everywhere.
pub fn seq_cid(i: u64) -> CidKey {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&i.to_le_bytes());
    // A 32-byte digest always fits a 64-byte multihash, and a v1 CID is
    // always convertible to v1.
    #[allow(clippy::unwrap_used)]
    let mh = multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    #[allow(clippy::unwrap_used)]
    CidKey::from_cid(cid::Cid::new_v1(0x55, mh)).unwrap()
}

/// A PinSet `namespace/name` pinning `seq_cid(i)` for every `i` in `range`,
/// named `p<i>`, all sharing default options.
pub fn seq_pinset(namespace: &str, name: &str, range: std::ops::Range<u64>) -> DesiredPinSet {
    let options = Arc::new(PinOptions::default());
    DesiredPinSet {
        id: PinSetId::new(namespace, name),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        suspend: false,
        prune: true,
        source: SourceRef {
            file: PathBuf::from("testkit.yaml"),
            pos: Pos::new(1, 1),
        },
        pins: range
            .map(|i| {
                let spec = PinSpec {
                    name: format!("p{i}"),
                    options: Arc::clone(&options),
                };
                (seq_cid(i), DesiredPin { spec, written_as: None })
            })
            .collect(),
    }
}
