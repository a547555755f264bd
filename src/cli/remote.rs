//! What every command that talks to a running peer shares: `--host`, the
//! client, and a runtime to drive it.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use pinfleet::client::{Auth, Client};

/// Default REST API URL of a local peer.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:9094";

/// Where the peer's REST API is, and how to prove who we are to it.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// A pinfleet peer's REST API: a URL (`http://127.0.0.1:9094`) or, as
    /// ipfs-cluster-ctl takes it, a multiaddress (`/ip4/127.0.0.1/tcp/9094`,
    /// `/dns/host/tcp/9094/https`).
    #[arg(long, short = 'l', value_name = "URL|MULTIADDR", env = "PINFLEET_HOST", default_value = DEFAULT_HOST)]
    pub host: String,
    /// Give up on a request after this long (seconds, or a duration such
    /// as 90s, 5m); none by default. Connecting alone gives up after 10 s.
    #[arg(long, short = 't', value_name = "DURATION", env = "PINFLEET_TIMEOUT", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
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
        let url = host_url(&self.host)?;
        Ok(Client::with_ca(&url, self.ca_file.as_deref())?
            .with_auth(self.auth()?)
            .with_timeout(self.timeout))
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

/// `--timeout`: whole seconds as ipfs-cluster-ctl takes them (`30`), or a
/// duration (`90s`, `5m`); `0` means none.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let d = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => pinfleet::manifest::duration::parse_duration(text)?,
    };
    Ok(d)
}

/// The REST API URL `--host` names: a URL as it is, or a multiaddress
/// (`/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT`, optionally ending in `/http`,
/// `/https` or `/tls/http`) turned into one.
pub fn host_url(host: &str) -> anyhow::Result<String> {
    if !host.starts_with('/') {
        return Ok(host.to_string());
    }
    use multiaddr::Protocol;
    let shown = pinfleet::manifest::shown(host);
    let addr: multiaddr::Multiaddr = host
        .parse()
        .map_err(|e| anyhow::anyhow!("--host {shown}: not a multiaddress: {e}"))?;
    let mut name = None;
    let mut port = None;
    let mut scheme = "http";
    for p in addr.iter() {
        match p {
            Protocol::Ip4(ip) => name = Some(ip.to_string()),
            Protocol::Ip6(ip) => name = Some(format!("[{ip}]")),
            Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => name = Some(h.to_string()),
            Protocol::Tcp(p) => port = Some(p),
            Protocol::Http => {}
            Protocol::Https | Protocol::Tls => scheme = "https",
            other => anyhow::bail!(
                "--host {shown}: {} is not supported: give /ip4|ip6|dns/HOST/tcp/PORT[/https]",
                other.tag()
            ),
        }
    }
    match (name, port) {
        (Some(name), Some(port)) => Ok(format!("{scheme}://{name}:{port}")),
        _ => anyhow::bail!("--host {shown}: expected /ip4|ip6|dns/HOST/tcp/PORT"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddress_hosts_become_urls() {
        assert_eq!(
            host_url("/ip4/127.0.0.1/tcp/9094").unwrap(),
            "http://127.0.0.1:9094"
        );
        assert_eq!(host_url("/ip6/::1/tcp/9094").unwrap(), "http://[::1]:9094");
        assert_eq!(
            host_url("/dns/cluster.example/tcp/443/https").unwrap(),
            "https://cluster.example:443"
        );
        assert_eq!(
            host_url("/dns4/cluster.example/tcp/9094/tls/http").unwrap(),
            "https://cluster.example:9094"
        );
        assert_eq!(
            host_url("http://127.0.0.1:9094").unwrap(),
            "http://127.0.0.1:9094"
        );
    }

    #[test]
    fn unusable_multiaddresses_are_named() {
        let e = host_url("/ip4/127.0.0.1").unwrap_err().to_string();
        assert!(e.contains("expected /ip4|ip6|dns/HOST/tcp/PORT"), "{e}");
        let e = host_url("/ip4/127.0.0.1/udp/9094").unwrap_err().to_string();
        assert!(e.contains("udp is not supported"), "{e}");
        let e = host_url("/nonsense").unwrap_err().to_string();
        assert!(e.contains("not a multiaddress"), "{e}");
    }

    #[test]
    fn timeouts_take_seconds_or_durations() {
        assert_eq!(parse_timeout("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_timeout("soon").is_err());
    }
}
