//! What every command that talks to a running peer shares: `--host`, the
//! client, and a runtime to drive it.

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use pinfleet::client::{Auth, Client};

/// Default REST API URL of a local peer.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:9094";

/// Where the peer's REST API is, and how to prove who we are to it.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// URL of a pinfleet peer's REST API.
    #[arg(long, value_name = "URL", env = "PINFLEET_HOST", default_value = DEFAULT_HOST)]
    pub host: String,
    /// Basic auth credentials for an API with users (prefer the environment
    /// variable: a command line is visible to other users in `ps`).
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "PINFLEET_BASIC_AUTH",
        hide_env_values = true
    )]
    pub basic_auth: Option<String>,
    /// A token from `pinfleet token` (POST /token), sent as `Authorization:
    /// Bearer`; used instead of --basic-auth when both are given.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PINFLEET_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM file of CA certificates to trust for an https:// --host, besides
    /// the public web's root CAs.
    #[arg(long, value_name = "PATH", env = "PINFLEET_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl HostArgs {
    /// A client of `--host` with the given credentials.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_ca(&self.host, self.ca_file.as_deref())?.with_auth(self.auth()?))
    }

    /// The credentials given, if any.
    pub fn auth(&self) -> anyhow::Result<Option<Auth>> {
        if let Some(token) = self.token.as_deref().filter(|t| !t.trim().is_empty()) {
            return Ok(Some(Auth::Bearer(token.trim().to_owned())));
        }
        match self.basic_auth.as_deref().filter(|b| !b.is_empty()) {
            None => Ok(None),
            Some(text) => Auth::basic(text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("invalid --basic-auth: {e}")),
        }
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

/// Stdout for listings that may be long: buffered, and a reader that went
/// away (`| head`) ends the listing quietly instead of failing it.
pub struct Out {
    inner: std::io::BufWriter<std::io::StdoutLock<'static>>,
    closed: bool,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out").field("closed", &self.closed).finish()
    }
}

impl Out {
    /// Locks stdout.
    pub fn new() -> Self {
        Self {
            inner: std::io::BufWriter::new(std::io::stdout().lock()),
            closed: false,
        }
    }

    /// Writes `bytes` as they are; false once the reader has gone.
    pub fn write(&mut self, bytes: &[u8]) -> anyhow::Result<bool> {
        use std::io::Write;
        if self.closed {
            return Ok(false);
        }
        match self.inner.write_all(bytes) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(false)
            }
            Err(e) => Err(e).context("cannot write to stdout"),
        }
    }

    /// Writes one line; false once the reader has gone.
    pub fn line(&mut self, line: &str) -> anyhow::Result<bool> {
        Ok(self.write(line.as_bytes())? && self.write(b"\n")?)
    }

    /// Flushes what is buffered.
    pub fn finish(mut self) -> anyhow::Result<()> {
        use std::io::Write;
        match self.inner.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(e).context("cannot write to stdout")
            }
            _ => Ok(()),
        }
    }
}
