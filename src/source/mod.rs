//! Where manifests come from (DESIGN §2, "sources"): a directory on disk
//! ([`DirSource`], watched with `notify`), a git repository ([`GitSource`],
//! fetched with git2, with credentials and webhook receivers that trigger a
//! fetch), and Kubernetes PinSet objects ([`kube`], one object per PinSet).
//!
//! A source reads and loads revisions and tells when one may have changed;
//! it must not decide what to apply or talk to the cluster: the reconcile
//! engine (`crate::controller`) drives sources and applies what they load.

pub mod dir;
pub mod git;
pub mod kube;
pub mod tree_names;
pub mod webhook;

pub use dir::{DirSource, DirWatch};
pub use git::{Credentials, GitSource, redact};
