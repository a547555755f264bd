//! pinfleet: declarative pinsets for a fleet of IPFS nodes.
//!
//! Manifests (`manifest`) are planned against the pins each owner holds
//! (`plan`) and applied to the shared state (`state`). See DESIGN.md for the
//! whole data flow.

pub mod allocator;
pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod consensus;
pub mod controller;
pub mod daemon;
pub mod ipfs;
pub mod manifest;
pub mod markdown;
pub mod multipart;
pub mod p2p;
pub mod pinsets;
pub mod plan;
pub mod source;
pub mod state;
pub mod testbed;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tls;
pub mod tracker;
pub mod wire;
