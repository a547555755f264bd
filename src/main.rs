//! The `pinfleet` command: parse arguments, run one subcommand, print the
//! error chain, exit with 0 (success), 1 (the answer is "no": invalid,
//! differs, refused) or 2 (usage or runtime error).

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", cli::render_error(&e));
            ExitCode::from(2)
        }
    }
}
