//! What every command that talks to a running peer shares: `--host`, the
//! client, and a runtime to drive it.

use std::future::Future;

use anyhow::Context;
use clap::Args;

use super::client::ApiClient;

/// Default REST API URL of a local peer.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:9094";

/// Where the peer's REST API is.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// URL of a pinfleet peer's REST API.
    #[arg(long, value_name = "URL", env = "PINFLEET_HOST", default_value = DEFAULT_HOST)]
    pub host: String,
}

impl HostArgs {
    /// A client of `--host`.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(&self.host)?)
    }
}

/// Runs `f` to completion on a runtime of its own: the CLI is synchronous
/// everywhere else.
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(f))
}
