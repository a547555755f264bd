//! Commands that run pinfleet itself: `init`, `daemon`, `testbed up`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use libp2p::Multiaddr;
use pinfleet::config;
use pinfleet::daemon::{self, DaemonOptions};
use pinfleet::testbed::{Testbed, TestbedIpfs, TestbedOptions};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Peer directory to create (identity.json, service.toml).
    #[arg(long, default_value = ".pinfleet", value_name = "DIR")]
    dir: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
    /// Cluster secret (64 hex characters), or `-` to read it from standard
    /// input (one line); generated when absent (and when PINFLEET_SECRET is
    /// not set either). Every peer of a cluster needs the same one. Given
    /// here it is visible to other users of the machine (`ps`): prefer
    /// --secret-file, `-` or PINFLEET_SECRET.
    #[arg(long, value_name = "HEX|-", conflicts_with = "secret_file")]
    secret: Option<String>,
    /// File holding the cluster secret (64 hex characters; surrounding
    /// whitespace, such as a trailing newline, is ignored).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// Human-readable peer name.
    #[arg(long)]
    peername: Option<String>,
    /// Create a follower of a collaborative cluster: a peer that holds and pins the state
    /// the cluster's trusted peers sign, and never writes. Needs --cluster.
    #[arg(long, requires = "cluster", conflicts_with_all = ["secret", "secret_file"])]
    follower: bool,
    /// With --follower: the cluster's published follower config, a file or
    /// an http(s) URL (from `pinfleet cluster publish`). The name, secret,
    /// trusted peers, bootstrap addresses and replication defaults come
    /// from it.
    #[arg(long, value_name = "FILE|URL", requires = "follower")]
    cluster: Option<String>,
}

/// Environment variable that may hold the cluster secret for `init`.
const SECRET_ENV: &str = "PINFLEET_SECRET";

/// Longest secret file or stdin line read: 64 hex characters and some
/// whitespace fit, a wrong file (or `/dev/zero`) is not read to its end.
const SECRET_READ_LIMIT: u64 = 1024;

/// The secret for `init`, from `--secret-file`, `--secret -` (stdin),
/// `--secret HEX` (with a warning: argv is public) or PINFLEET_SECRET, in
/// that order; `None` for a fresh one. A secret read from a file or stdin
/// is checked here so the error can say where it came from; no error
/// repeats it.
fn init_secret(args: &InitArgs) -> anyhow::Result<Option<String>> {
    use std::io::{BufRead, Read};
    let checked = |text: String, from: &str| -> anyhow::Result<Option<String>> {
        config::ClusterSecret::parse_hex(&text)
            .map_err(|reason| anyhow::anyhow!("invalid secret {from}: {reason}"))?;
        Ok(Some(text.trim().to_owned()))
    };
    if let Some(path) = &args.secret_file {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(SECRET_READ_LIMIT).read_to_string(&mut text))
            .with_context(|| format!("cannot read the secret file {}", path.display()))?;
        return checked(text, &format!("in {}", path.display()));
    }
    match args.secret.as_deref() {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .take(SECRET_READ_LIMIT)
                .read_line(&mut line)
                .context("cannot read the secret from standard input")?;
            if line.trim().is_empty() {
                anyhow::bail!("--secret -: no secret on standard input");
            }
            checked(line, "on standard input")
        }
        Some(hex) => {
            eprintln!(
                "warning: a secret given as --secret on the command line is visible to other \
                 users of this machine (ps, /proc); use --secret-file PATH, --secret - \
                 (standard input) or {SECRET_ENV} instead"
            );
            Ok(Some(hex.to_owned()))
        }
        None => Ok(std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty())),
    }
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    if let Some(source) = args.cluster.as_deref() {
        return super::follow::init_follower(
            &args.dir,
            args.force,
            source,
            args.peername.as_deref(),
        );
    }
    let secret = init_secret(&args)?;
    let report = config::init(
        &args.dir,
        args.force,
        secret.as_deref(),
        args.peername.as_deref(),
    )
    .with_context(|| format!("cannot initialise {}", args.dir.display()))?;
    println!("peer id:  {}", report.peer_id);
    println!("identity: {}", report.identity_path.display());
    if report.wrote_service {
        println!(
            "config:   {} (new; share it with the other peers)",
            report.service_path.display()
        );
    } else {
        println!("config:   {} (kept)", report.service_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Peer directory (from `pinfleet init`).
    #[arg(long, default_value = ".pinfleet", value_name = "DIR")]
    dir: PathBuf,
    /// Join an existing cluster through this peer (repeatable). Ignored once
    /// the peer has state.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Threads that run the peer's tasks. Default: one per core. Several
    /// peers on one machine (`pinfleet testbed up` gives each its share of
    /// the cores) run faster with fewer each.
    #[arg(long, env = "PINFLEET_WORKER_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

/// The multi-threaded runtime, with `threads` workers (one per core when
/// `None`).
fn runtime_with(threads: Option<u16>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(usize::from(n));
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn daemon(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    run_daemon(args.dir, args.bootstrap, args.worker_threads)
}

/// Runs the daemon of `dir` until SIGINT/SIGTERM.
pub(super) fn run_daemon(
    dir: PathBuf,
    bootstrap: Vec<Multiaddr>,
    threads: Option<u16>,
) -> anyhow::Result<ExitCode> {
    init_tracing("info,openraft=warn,libp2p=warn");
    runtime_with(threads)?.block_on(async {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            daemon::shutdown_signal().await;
            tracing::info!("shutting down");
            c.cancel();
        });
        daemon::run(DaemonOptions { dir, bootstrap }, cancel)
            .await
            .context("daemon failed")
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum TestbedCommand {
    /// Start N local peers (child processes on free loopback ports) and keep
    /// them running until Ctrl-C.
    Up(TestbedUpArgs),
    /// Kill one peer of a running testbed with SIGKILL (a crash, as far as
    /// the cluster can tell) and wait until its API is gone.
    Kill(TestbedPeerArgs),
    /// Start a stopped peer of a running testbed again, with its state; it
    /// runs on its own (Ctrl-C on `testbed up` does not stop it; `testbed
    /// kill` does).
    Start(TestbedPeerArgs),
}

#[derive(Debug, Args)]
pub struct TestbedPeerArgs {
    /// The peer: `peer-1`, `1` or its peer id (as in testbed.json).
    #[arg(value_name = "PEER")]
    peer: String,
    /// Testbed directory (holds testbed.json).
    #[arg(long, env = "TESTBED", default_value = ".testbed", value_name = "DIR")]
    dir: PathBuf,
    /// Give up after this long (seconds, or e.g. 90s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_wait)]
    timeout: Duration,
}

#[derive(Debug, Args)]
pub struct TestbedUpArgs {
    /// Number of peers (the cluster's trusted peers).
    #[arg(long, default_value_t = 3)]
    peers: usize,
    /// Also start N followers: `pinfleet follow` processes of the
    /// published config the testbed writes to DIR/follow.json, listed in
    /// testbed.json as "followers". They use the peers' --ipfs setting
    /// (with `kubo=…`: none); the testbed is up once each holds the state.
    #[arg(long, default_value_t = 0, value_name = "N")]
    followers: usize,
    /// Testbed directory (kept between runs: peers restart with their state).
    #[arg(long, default_value = ".testbed", value_name = "DIR")]
    dir: PathBuf,
    /// IPFS backend for the peers: `embedded` (an IPFS node inside each
    /// peer, connected to the others), `none` (consensus only) or
    /// `kubo=URL1,URL2,...` (one Kubo RPC URL per peer, in order).
    #[arg(long, default_value = "embedded")]
    ipfs: String,
    /// Run the embedded nodes on the public IPFS network's protocols
    /// (`[ipfs] swarm = "public"`: Kubo and other IPFS nodes may connect,
    /// DHT), listening on loopback TCP and QUIC, with no bootstrap peers.
    #[arg(long)]
    public_ipfs: bool,
    /// Add these files or directories to peer 0's IPFS node once the
    /// cluster is up, without pinning them (the applied manifests do), so
    /// the other peers fetch them from peer 0. Needs an IPFS backend.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    add: Vec<PathBuf>,
    /// Apply these manifests once the cluster is up (after --add).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    apply: Vec<PathBuf>,
    /// Stop the testbed after applying (and, with --wait, pinning) instead
    /// of running until Ctrl-C.
    #[arg(long)]
    once: bool,
    /// After applying, wait until every allocation is pinned (live summary
    /// on the terminal); exit 1 if that takes longer than this (e.g. 2m).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "2m", value_parser = parse_wait)]
    wait: Option<Duration>,
    /// Seconds to wait for the cluster to form.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Give the REST API three users (admin, writer, reader) with random
    /// passwords, written to testbed.json as "basic_auth"; --add and
    /// --apply run as the writer.
    #[arg(long)]
    auth: bool,
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    pinfleet::manifest::duration::parse_duration(s)
}

pub fn testbed(cmd: TestbedCommand) -> anyhow::Result<ExitCode> {
    let args = match cmd {
        TestbedCommand::Up(args) => args,
        TestbedCommand::Kill(peer) => {
            return runtime()?.block_on(async move {
                let (name, p) = pinfleet::testbed::kill_peer(&peer.dir, &peer.peer, peer.timeout)
                    .await
                    .context("cannot kill the peer")?;
                println!("killed {name} (pid {})", p.pid);
                Ok(ExitCode::SUCCESS)
            });
        }
        TestbedCommand::Start(peer) => {
            return runtime()?.block_on(async move {
                let (name, p) = pinfleet::testbed::start_peer(&peer.dir, &peer.peer, peer.timeout)
                    .await
                    .context("cannot start the peer")?;
                println!("started {name} (pid {}), api {}", p.pid, p.api);
                Ok(ExitCode::SUCCESS)
            });
        }
    };
    let ipfs = match args.ipfs.as_str() {
        "none" => TestbedIpfs::None,
        "embedded" if args.public_ipfs => TestbedIpfs::EmbeddedPublic,
        "embedded" => TestbedIpfs::Embedded,
        _ if args.public_ipfs => anyhow::bail!("--public-ipfs needs --ipfs embedded"),
        other => match other.strip_prefix("kubo=") {
            Some(list) => TestbedIpfs::Kubo(
                list.split(',')
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect(),
            ),
            None => anyhow::bail!(
                "--ipfs must be `embedded`, `none` or `kubo=URL1,URL2,...`, got {other:?}"
            ),
        },
    };
    if args.peers == 0 {
        anyhow::bail!("--peers must be at least 1");
    }
    init_tracing("warn");
    let exe = std::env::current_exe().context("cannot find the pinfleet executable")?;
    runtime()?.block_on(async move {
        let opts = TestbedOptions {
            exe: exe.clone(),
            peers: args.peers,
            dir: args.dir.clone(),
            timeout: Duration::from_secs(args.timeout),
            ipfs,
            auth: args.auth,
            followers: args.followers,
            env: Vec::new(),
        };
        if args.followers > 0 {
            eprintln!(
                "starting {} peers and {} followers in {} …",
                args.peers,
                args.followers,
                args.dir.display()
            );
        } else {
            eprintln!("starting {} peers in {} …", args.peers, args.dir.display());
        }
        let tb = Testbed::up(&opts)
            .await
            .context("testbed failed to start")?;
        for (i, p) in tb.file.peers.iter().enumerate() {
            println!("peer-{i}  {}  api {}  pid {}", p.id, p.api, p.pid);
        }
        for (i, f) in tb.file.followers.iter().enumerate() {
            println!("follower-{i}  {}  api {}  pid {}", f.id, f.api, f.pid);
        }
        println!(
            "cluster formed; testbed.json written to {}",
            args.dir.display()
        );
        println!(
            "dashboard {}/ui/ (peer-0; every peer serves one)",
            tb.file.peers[0].api.trim_end_matches('/')
        );
        if args.auth {
            println!(
                "api users (admin, writer, reader) in {}: e.g. PINFLEET_BASIC_AUTH=\"$(jq -r .basic_auth.writer {})\"",
                args.dir.join(pinfleet::testbed::TESTBED_FILE).display(),
                args.dir.join(pinfleet::testbed::TESTBED_FILE).display()
            );
        }
        // The writer's credentials for --add and --apply, in the
        // environment (not on a command line other users can read).
        let writer: Vec<(&str, String)> = tb
            .file
            .credentials("writer")
            .map(|c| ("PINFLEET_BASIC_AUTH", c.to_owned()))
            .into_iter()
            .collect();
        let mut code = ExitCode::SUCCESS;
        for path in &args.add {
            // The same code path a user runs: `pinfleet add --host …`.
            let status = tokio::process::Command::new(&opts.exe)
                .arg("add")
                .arg(path)
                .args(["--no-pin", "--host", &tb.file.peers[0].api])
                .envs(writer.iter().cloned())
                .status()
                .await
                .context("cannot run pinfleet add")?;
            if !status.success() {
                eprintln!("cannot add {} to peer 0; stopping", path.display());
                tb.stop().await;
                return Ok(ExitCode::from(2));
            }
        }
        if !args.apply.is_empty() {
            // The same code path a user runs: `pinfleet apply --host …`.
            let host = tb.file.peers[0].api.clone();
            let status = tokio::process::Command::new(&opts.exe)
                .arg("apply")
                .args(&args.apply)
                .arg("--host")
                .arg(&host)
                .envs(writer.iter().cloned())
                .status()
                .await
                .context("cannot run pinfleet apply")?;
            if !status.success() {
                code = ExitCode::from(
                    status
                        .code()
                        .and_then(|c| u8::try_from(c).ok())
                        .unwrap_or(2),
                );
            }
        }
        let apis: Vec<String> = tb.file.peers.iter().map(|p| p.api.clone()).collect();
        let reader = tb.file.credentials("reader").map(str::to_owned);
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            daemon::shutdown_signal().await;
            stop.cancel();
        });
        if let Some(limit) = args.wait {
            match super::testbed_watch::watch(&apis, reader.as_deref(), Some(limit), &cancel).await {
                super::testbed_watch::Ended::AllPinned(_) => println!("every pin is pinned"),
                super::testbed_watch::Ended::TimedOut(s) => {
                    eprintln!(
                        "not every pin is pinned after {} ({}); see `pinfleet status --host {}`",
                        pinfleet::manifest::duration::format_duration(limit),
                        s.line(),
                        apis[0]
                    );
                    code = ExitCode::from(super::NO);
                }
                super::testbed_watch::Ended::Cancelled => {}
            }
        }
        if !args.once && !cancel.is_cancelled() {
            println!("running; press Ctrl-C to stop");
            super::testbed_watch::watch(&apis, reader.as_deref(), None, &cancel).await;
        }
        eprintln!("stopping peers …");
        tb.stop().await;
        Ok::<_, anyhow::Error>(code)
    })
}
