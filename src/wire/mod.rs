//! Every JSON shape that crosses the REST boundary (DESIGN §7): what the
//! server (`crate::api`) sends and reads, what the client
//! (`crate::client`) decodes, and what the controller sends. One definition
//! per shape, so the three can never disagree.
//!
//! Plain serde types and their encoding rules only: this module must not do
//! I/O, talk to the cluster or know HTTP frameworks. It depends on nothing
//! but `manifest`'s value types. Shapes that are also the Kubernetes
//! resource's (`PinSetStatus`, `Condition`) are defined with the CRD in
//! `manifest::model` and re-exported here.

mod document;
mod error;
mod health;
mod ipfs;
mod monitor;
mod patch;
mod peers;
mod pin;
mod pinsets;
mod pinsvc;
mod reconcile;
mod status;

pub use document::{ManifestDocument, to_manifest_json};
pub use error::{ErrorBody, Problem};
pub use health::{Alert, Bandwidth, ConnectGraph};
pub use ipfs::{
    AddedOutput, CidLink, GlobalRepoGc, IpfsDirEntry, IpfsEntryType, RepoGc, RepoGcKey,
};
pub use monitor::MonitorMetric;
pub use patch::{PatchDocument, PatchPin};
pub use peers::{FollowerInfo, IpfsInfo, PeerInfo, VersionInfo};
pub use pin::{BatchPinReport, OwnerRecord, PinRecord, ZERO_TIME};
pub use pinsets::{ApplyReport, ConditionsReport, PinSetInfo, RefusedApply};
pub use pinsvc::{PinSvcError, PinSvcFailure, PinSvcPin, PinSvcResults, PinSvcStatus};
pub use reconcile::{
    DEFAULT_WAIT, Handled, MAX_WAIT, ReconcileAnswer, ReconcileQuery, not_run_here,
};
pub use status::{GlobalPinInfo, PinInfoShort, TrackerStatus};

pub use crate::manifest::model::{Condition, PinSetStatus};
