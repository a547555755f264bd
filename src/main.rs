//! The `pinfleet` command: parse arguments, run one subcommand, print the
//! error chain, exit with 0 (success), 1 (the answer is "no": invalid,
//! differs, refused) or 2 (usage or runtime error).

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// mimalloc instead of the system allocator: glibc's per-thread arenas kept
/// the memory of a large apply (a million-pin request body, its plan) long
/// after it was freed, so a peer's RSS stayed at its peak; mimalloc returns
/// freed pages to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pinfleet::tls::install_crypto_provider();
    // No transparent huge pages for this process: mimalloc returns freed
    // pages to the system and touches them again later, and with THP each
    // touch made the kernel zero a whole 2 MiB page. Measured on the
    // 3-peer replication of 512 MiB (docs/benchmarks.md): 20% of all CPU
    // went to that zeroing, and the transfer took a third longer. Best
    // effort: a kernel without the setting runs as before.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", cli::render_error(&e));
            ExitCode::from(2)
        }
    }
}
