//! Subcommands. Each returns the exit code of a completed run, or an error
//! for a usage or runtime failure (exit 2).

mod add;
mod apply;
mod auth;
mod controller;
mod follow;
mod get;
mod monitor;
mod node;
mod peers;
mod pin;
mod plan;
mod reconcile;
mod reference;
mod remote;
mod state;
mod status;
mod testbed_watch;
mod validate;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pinfleet::manifest::Limits;

/// Declarative pinsets for a fleet of IPFS nodes.
#[derive(Debug, Parser)]
#[command(name = "pinfleet", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a peer directory: identity.json and service.toml.
    Init(node::InitArgs),
    /// Run a peer until SIGINT/SIGTERM (REST API on 127.0.0.1:9094 by default).
    Daemon(node::DaemonArgs),
    /// Run a follower of a collaborative cluster until SIGINT/SIGTERM.
    ///
    /// FILE|URL is the cluster's published follower config (`pinfleet
    /// cluster publish`). A --dir without an identity is first created as
    /// a follower of that cluster (as `init --follower --cluster`); an
    /// existing one must already be a follower of it. A follower holds and
    /// pins the state the trusted peers sign; its REST API is read-only.
    Follow(follow::FollowArgs),
    /// Collaborative clusters: publish the config followers join with.
    #[command(subcommand)]
    Cluster(follow::ClusterCommand),
    /// A local multi-peer cluster of daemon processes.
    #[command(subcommand)]
    Testbed(node::TestbedCommand),
    /// Check PinSet manifests; print each problem as file:line:col: message.
    ///
    /// Exit 0 when every manifest is valid, 1 when any is invalid, 2 when a
    /// path cannot be read.
    Validate(validate::ValidateArgs),
    /// Show what applying manifests would change against a state export.
    ///
    /// Exit 0 when every PinSet can be applied, 1 when the prune guard
    /// refuses one or a manifest is invalid, 2 on other errors.
    Plan(plan::PlanArgs),
    /// Print the PinSet CustomResourceDefinition (YAML).
    Crd,
    /// Print the JSON schema of a PinSet's spec.
    Schema,
    /// Print the REST API's OpenAPI 3.1 document (as `docs/openapi.json`
    /// and `GET /openapi.json`).
    Openapi {
        /// Print it as the Markdown reference instead (`docs/api.md`).
        #[arg(long)]
        markdown: bool,
    },
    /// Apply PinSet manifests to a running cluster.
    ///
    /// `pinsFrom` lists are read locally; each PinSet is sent whole and
    /// applied atomically. A PinSet another writer changes while it is
    /// planned is planned again once. Exit 0 when every PinSet was applied
    /// (and, with --wait, is Ready), 1 when a manifest is invalid, the prune
    /// guard refused a PinSet or --wait timed out, 2 on errors (a second
    /// conflict among them).
    Apply(apply::ApplyArgs),
    /// Show what applying manifests would change on a running cluster.
    ///
    /// Exit 0 when nothing would change, 1 when something would (or a
    /// manifest is invalid), 2 on errors.
    Diff(apply::DiffArgs),
    /// Delete a PinSet from a running cluster: release its pins, forget it.
    ///
    /// Exit 0 when deleted, 1 when the prune guard refused (use --force).
    Delete(apply::DeleteArgs),
    /// Show the peer's identity (IPFS Cluster's ID).
    Id(peers::IdArgs),
    /// Check that a peer's REST API answers; `health metrics` shows the
    /// cluster's metrics.
    Health(monitor::HealthArgs),
    /// Show the peer's version.
    Version(monitor::VersionArgs),
    /// Manage the peers' IPFS nodes.
    #[command(subcommand)]
    Ipfs(monitor::IpfsCommand),
    /// List or remove cluster peers.
    #[command(subcommand)]
    Peers(peers::PeersCommand),
    /// Add files or directories through a peer's IPFS node and pin the root.
    ///
    /// The same CIDs as `ipfs add` (CIDv0 by default); the root is pinned in
    /// the cluster (owner `api`) with the given replication.
    Add(add::AddArgs),
    /// Read content back through a peer's IPFS node: a file, or a
    /// directory tree.
    ///
    /// `CID[/PATH]` is written to -o PATH (default: the path's last name,
    /// or the CID, in the current directory; `-o -` writes a file to
    /// stdout). Blocks the peer's node lacks are fetched from the nodes it
    /// is connected to.
    Get(get::GetArgs),
    /// Pin, release and list pins by hand (owner `api`).
    #[command(subcommand)]
    Pin(pin::PinCommand),
    /// Export or import the shared state (NDJSON, one pin per line).
    #[command(subcommand)]
    State(state::StateCommand),
    /// Show pin statuses: CIDs, a PinSet's summary, or every pin.
    ///
    /// `status pinset/NS/NAME` shows the PinSet's conditions, counts per
    /// peer and first errors. Exit 1 when the PinSet is unknown; a CID not
    /// in the pinset shows each peer's own status (unpinned), as
    /// ipfs-cluster-ctl does.
    Status(status::StatusArgs),
    /// Retry failed pin and unpin operations now (one CID, or all).
    Recover(status::RecoverArgs),
    /// Reconcile a source's PinSets against a cluster, until Ctrl-C.
    ///
    /// Prints one line per PinSet outcome. With --once: exit 0 when every
    /// PinSet was applied (without waiting for its pins:
    /// `status pinset/NS/NAME --wait` does), 1 when any is
    /// Stalled or the source is invalid.
    Controller(controller::ControllerArgs),
    /// Reconcile one PinSet now, even when its source did not change.
    ///
    /// Asks the controller that runs the PinSet's source (the daemon's, or a
    /// standalone controller's --listen address as --host), waits for the
    /// reconcile and prints the PinSet's status. Exit 0 when done and not
    /// Stalled, 1 when unknown, not run by a controller there, timed out or
    /// Stalled, 2 on errors.
    Reconcile(reconcile::ReconcileArgs),
    /// Hash a password for [api] basic_auth_credentials.
    ///
    /// Reads the password from the terminal (twice, without echo) or one
    /// line of stdin, and prints its argon2 hash; with --user, the whole
    /// config line `NAME = "ROLE:HASH"`.
    Passwd(auth::PasswdArgs),
    /// Get a token from a peer (POST /token) for --token / PINFLEET_TOKEN.
    Token(auth::TokenArgs),
    /// Print a reference page as Markdown: every command, or every
    /// service.toml key.
    ///
    /// The pages in `docs/reference/` are this output; after changing a
    /// command or a config key, regenerate them with `pinfleet reference
    /// cli > docs/reference/cli.md` and `pinfleet reference config >
    /// docs/reference/config.md`.
    #[command(subcommand)]
    Reference(reference::ReferenceCommand),
}

/// Bounds on what a load may read, shared by every command that loads
/// manifests.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest manifest (YAML) file accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_manifest_bytes)]
    max_manifest_bytes: u64,
    /// Largest pinsFrom list file accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_list_bytes)]
    max_list_bytes: u64,
    /// Most pins accepted in one load, over all PinSets.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_pins)]
    max_pins: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_manifest_bytes: self.max_manifest_bytes,
            max_list_bytes: self.max_list_bytes,
            max_pins: self.max_pins,
            ..Limits::default()
        }
    }
}

/// Manifest paths, shared by commands that load them.
#[derive(Debug, Args)]
pub struct PathArgs {
    /// Manifest files or directories (searched recursively for *.yaml, *.yml).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(a) => node::init(a),
        Command::Daemon(a) => node::daemon(a),
        Command::Follow(a) => follow::follow(a),
        Command::Cluster(c) => follow::run(c),
        Command::Testbed(c) => node::testbed(c),
        Command::Validate(a) => validate::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Crd => {
            print!("{}", pinfleet::manifest::crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&pinfleet::manifest::spec_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi { markdown } => {
            if markdown {
                print!("{}", pinfleet::api::openapi_markdown());
            } else {
                print!("{}", pinfleet::api::openapi_json());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(a) => apply::run_apply(a),
        Command::Diff(a) => apply::run_diff(a),
        Command::Delete(a) => apply::run_delete(a),
        Command::Id(a) => peers::run_id(a),
        Command::Health(a) => monitor::run_health(a),
        Command::Version(a) => monitor::run_version(a),
        Command::Ipfs(c) => monitor::run_ipfs(c),
        Command::Peers(c) => peers::run(c),
        Command::Add(a) => add::run(a),
        Command::Get(a) => get::run(a),
        Command::Pin(c) => pin::run(c),
        Command::State(c) => state::run(c),
        Command::Status(a) => status::run_status(a),
        Command::Recover(a) => status::run_recover(a),
        Command::Controller(a) => controller::run(a),
        Command::Reconcile(a) => reconcile::run(a),
        Command::Passwd(a) => auth::passwd(a),
        Command::Token(a) => auth::token(a),
        Command::Reference(c) => reference::run(c),
    }
}

/// `error: …` then one `  caused by: …` line per source.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut out = format!("error: {e}");
    for cause in e.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    let unauthorized = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<pinfleet::client::ClientError>(),
            Some(pinfleet::client::ClientError::Api { status: 401, .. })
        )
    });
    if unauthorized {
        out.push_str(
            "\n  hint: this API has users: give --basic-auth USER:PASSWORD or --token \
             (or set PINFLEET_BASIC_AUTH / PINFLEET_TOKEN)",
        );
    }
    out
}

/// Exit code 1: a completed run whose answer is "no".
pub const NO: u8 = 1;
