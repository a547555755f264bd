//! Collaborative clusters from the command line: `pinfleet cluster publish`
//! (a trusted peer's operator writes the published follower config),
//! `pinfleet init --follower --cluster FILE|URL` and `pinfleet follow
//! FILE|URL` (anyone joins as a follower).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use libp2p::{Multiaddr, PeerId};
use pinfleet::config::{self, FollowConfig, IDENTITY_FILE, SERVICE_FILE, ServiceConfig};

use super::remote::{DEFAULT_HOST, HostArgs, block_on};

/// Largest published config read from a file or URL.
const MAX_FOLLOW_BYTES: usize = 1 << 20;

/// `pinfleet cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print the published follower config (follow.json) of this peer's
    /// cluster: its name, secret, trusted peers and their addresses.
    ///
    /// Run it on a trusted peer: the name, secret and trusted peers come
    /// from --dir's service.toml (cluster.trusted_peers must be set), the
    /// trusted peers' p2p addresses from the running daemon's `GET /peers`.
    /// The file holds the cluster secret: publish it to those who may
    /// follow. Followers join with `pinfleet follow FILE|URL`.
    Publish(PublishArgs),
}

/// Arguments of `pinfleet cluster publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Peer directory of a trusted peer (its service.toml; its run.json
    /// gives the API when --host is not given).
    #[arg(long, default_value = ".pinfleet", value_name = "DIR")]
    dir: PathBuf,
    /// Write the file here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    host: HostArgs,
}

/// Arguments of `pinfleet follow`.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// The published follower config: a file, or an http(s) URL.
    #[arg(value_name = "FILE|URL")]
    cluster: String,
    /// Peer directory: created as a follower of that cluster when it has
    /// no identity yet, otherwise it must already be one.
    #[arg(long, default_value = ".pinfleet", value_name = "DIR")]
    dir: PathBuf,
}

/// Runs `pinfleet cluster …`.
pub fn run(cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let ClusterCommand::Publish(args) = cmd;
    publish(args)
}

fn publish(mut args: PublishArgs) -> anyhow::Result<ExitCode> {
    let path = args.dir.join(SERVICE_FILE);
    let config =
        ServiceConfig::load(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let trusted = config.cluster.trusted_peers.clone();
    if trusted.is_empty() {
        // Before asking the API: nothing it says could help.
        return Err(config::FollowError::NoTrustedPeers.into());
    }
    // The daemon of --dir, when --host was left at its default.
    if args.host.host == DEFAULT_HOST
        && let Some(info) = pinfleet::daemon::read_run_file(&args.dir)
    {
        args.host.host = info.api;
    }
    let client = args.host.client()?;
    let addrs = block_on(async move {
        let mut addrs: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        let mut peers = client.peers().await?;
        while let Some(p) = peers.next().await {
            let p = p?;
            if let Ok(id) = p.id.parse::<PeerId>() {
                let listed = p.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                addrs.push((id, listed));
            }
        }
        Ok::<_, anyhow::Error>(addrs)
    })?
    .with_context(|| format!("cannot list the peers of {}", args.host.host))?;
    let published = FollowConfig::publish(&config, &trusted, |id| {
        addrs
            .iter()
            .find(|(p, _)| p == id)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    })?;
    for t in published.trusted.iter().filter(|t| t.addrs.is_empty()) {
        eprintln!(
            "warning: trusted peer {} is not among the running peers: published without addresses",
            t.id
        );
    }
    // What a follower would refuse, refused here.
    let text = published.to_json();
    FollowConfig::parse(text.as_bytes())?;
    match &args.out {
        Some(out) => {
            write_owner_only(out, text.as_bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!("wrote {} (it holds the cluster secret)", out.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to `path`, created readable by its owner only (it holds
/// the cluster secret; the operator decides whom to give it).
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads a published config from a file or an http(s) URL (at most 1 MiB).
pub fn read_published(source: &str) -> anyhow::Result<FollowConfig> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        if plain_http_off_loopback(source) {
            // The file names whom this follower trusts: over plain http,
            // anyone on the way can choose that.
            eprintln!(
                "warning: {source} is fetched over plain http: anyone on the network path could \
                 replace the trusted peers it names; prefer https or a file you checked"
            );
        }
        block_on(fetch(source))??
    } else {
        read_file(Path::new(source))?
    };
    FollowConfig::parse(&bytes).with_context(|| format!("cannot use {source}"))
}

/// An `http://` URL whose host is not a loopback address.
fn plain_http_off_loopback(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    if u.scheme() != "http" {
        return false;
    }
    match u.host_str() {
        Some("localhost") => false,
        Some(h) => !h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback()),
        None => true,
    }
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FOLLOW_BYTES as u64 + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > MAX_FOLLOW_BYTES {
        anyhow::bail!("{} is larger than 1 MiB", path.display());
    }
    Ok(bytes)
}

async fn fetch(url: &str) -> anyhow::Result<Vec<u8>> {
    let client = pinfleet::tls::client(None)?
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .context("cannot build an http client")?;
    let mut response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot fetch {url}"))?;
    if !response.status().is_success() {
        anyhow::bail!("cannot fetch {url}: {}", response.status());
    }
    let too_large = || anyhow::anyhow!("{url}: larger than 1 MiB");
    if response
        .content_length()
        .is_some_and(|n| n > MAX_FOLLOW_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("cannot fetch {url}"))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_FOLLOW_BYTES {
            return Err(too_large());
        }
    }
    Ok(bytes)
}

/// `pinfleet init --follower --cluster SOURCE`.
pub fn init_follower(
    dir: &Path,
    force: bool,
    source: &str,
    peername: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let follow = read_published(source)?;
    let report = config::init_follower(dir, force, &follow, peername)
        .with_context(|| format!("cannot initialise {}", dir.display()))?;
    println!("peer id:  {}", report.peer_id);
    println!("identity: {}", report.identity_path.display());
    println!(
        "config:   {} (a follower of cluster {:?}, {} trusted peers)",
        report.service_path.display(),
        follow.cluster,
        follow.trusted.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `pinfleet follow SOURCE`: a follower of that cluster in --dir (created
/// when it has no identity yet), run until SIGINT/SIGTERM.
pub fn follow(args: FollowArgs) -> anyhow::Result<ExitCode> {
    let follow = read_published(&args.cluster)?;
    if args.dir.join(IDENTITY_FILE).exists() {
        let path = args.dir.join(SERVICE_FILE);
        let config = ServiceConfig::load(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        follow.check_follower(&config, &path)?;
    } else {
        let report = config::init_follower(&args.dir, false, &follow, None)
            .with_context(|| format!("cannot initialise {}", args.dir.display()))?;
        eprintln!(
            "initialised {} as follower {} of cluster {:?}",
            args.dir.display(),
            report.peer_id,
            follow.cluster
        );
    }
    super::node::run_daemon(args.dir, Vec::new(), None)
}
