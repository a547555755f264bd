//! pinfleet: declarative pinsets for a fleet of IPFS nodes.
//!
//! Manifests (`manifest`) are planned against the pins each owner holds
//! (`plan`) and applied to the shared state (`state`). See DESIGN.md for the
//! whole data flow.

pub mod allocator;
pub mod api;
pub mod config;
pub mod consensus;
pub mod controller;
pub mod daemon;
pub mod informer;
pub mod ipfs;
pub mod ipfs_peering;
pub mod manifest;
pub mod p2p;
pub mod plan;
pub mod state;
pub mod testbed;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tracker;
