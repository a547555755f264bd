//! pinfleet integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod access;
mod add_compat;
mod api;
mod bounded;
mod cli;
mod cli_ctl;
mod cluster;
mod compat_monitor;
mod conditional_writes;
mod conditions;
mod controller;
mod controller_daemon;
mod controller_git;
mod crash;
mod crd;
mod diagnostics;
mod embedded;
mod hamt_vectors;
mod hooks_daemon;
mod inproc;
mod ipfs;
mod limits;
mod manifest;
mod patch;
mod rest_fuzz;
mod snapshots;
mod source_safety;
mod status;
mod stream_errors;
mod support;
mod testbed;
mod tls;
mod tracker;
mod webhook;
