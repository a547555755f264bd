//! `pinfleet validate`: the same loading and validation as the controller.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pinfleet::manifest::{LoadError, load_paths, plural};
use serde_json::json;

use super::{NO, PathArgs};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    paths: PathArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    match load_paths(&args.paths.paths, &args.paths.limits.limits()) {
        Ok(loaded) => {
            if args.json {
                let sets: Vec<_> = loaded
                    .pinsets
                    .iter()
                    .map(|p| {
                        json!({
                            "pinset": p.id.to_string(),
                            "source": p.source.to_string(),
                            "pins": p.pins.len(),
                            "suspend": p.suspend,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    json!({
                        "valid": true,
                        "digest": loaded.digest,
                        "files": loaded.manifest_files,
                        "pinsets": sets,
                        "errors": [],
                    })
                );
            } else {
                for p in &loaded.pinsets {
                    println!("ok {} ({}) {}", p.id, plural(p.pins.len(), "pin"), p.source);
                }
                println!(
                    "valid: {}, {} in {}",
                    plural(loaded.pinsets.len(), "PinSet"),
                    plural(loaded.pin_count(), "pin"),
                    plural(loaded.manifest_files, "file")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Invalid(diags)) => {
            if args.json {
                println!(
                    "{}",
                    json!({ "valid": false, "pinsets": [], "errors": diags.0 })
                );
            } else {
                println!("{diags}");
                eprintln!("invalid: {}", plural(diags.0.len(), "problem"));
            }
            Ok(ExitCode::from(NO))
        }
        Err(e) => Err(e).context("cannot validate"),
    }
}
