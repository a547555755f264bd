//! `pinfleet passwd` (a password hash for `[api] basic_auth_credentials`)
//! and `pinfleet token` (a token from `POST /token`).
//!
//! Passwords are read from the terminal without echo, or from stdin when it
//! is not a terminal; never from the command line.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use pinfleet::auth::{Role, hash_password};

use super::remote::{HostArgs, block_on};

/// `pinfleet passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Print a whole config line `USER = "ROLE:HASH"` for this user.
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The user's role (with --user): reader, writer or admin.
    #[arg(long, value_name = "ROLE", default_value = "reader", requires = "user")]
    role: String,
}

/// Reads a password (twice on a terminal), prints its argon2 hash.
pub fn passwd(args: PasswdArgs) -> anyhow::Result<ExitCode> {
    let role = Role::parse(&args.role).with_context(|| {
        format!(
            "invalid --role {:?}: expected reader, writer or admin",
            args.role
        )
    })?;
    if let Some(user) = &args.user
        && (user.is_empty() || user.contains(':') || user.contains('"'))
    {
        bail!(
            "invalid --user {}: a user name is not empty and holds no ':' or '\"'",
            pinfleet::manifest::shown(user)
        );
    }
    let password = if std::io::stdin().is_terminal() {
        let first = prompt("password: ")?;
        let again = prompt("again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
    match &args.user {
        Some(user) => println!("{user} = \"{role}:{hash}\""),
        None => println!("{hash}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads one line from the terminal with echo off.
fn prompt(label: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    eprint!("{label}");
    std::io::stderr().flush().ok();
    let saved = tcgetattr(&stdin).context("cannot read the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("cannot turn off echo")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.context("cannot read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// `pinfleet token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    host: HostArgs,
    /// A lower role than yours for the token (reader, writer).
    #[arg(long, value_name = "ROLE")]
    role: Option<String>,
    /// A shorter life than the API's token_ttl (e.g. 1h).
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// A token for another user (admin only).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
}

/// Prints a token for `Authorization: Bearer` (`--token`, `PINFLEET_TOKEN`).
pub fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let client = args.host.client()?;
    let token = block_on(client.token(
        args.role.as_deref(),
        args.ttl.as_deref(),
        args.user.as_deref(),
    ))??;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
