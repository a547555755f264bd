//! `pinfleet validate`: the same loading and validation as the controller.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pinfleet::manifest::{LoadError, load_paths};
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
                    println!("ok {} ({} pins) {}", p.id, p.pins.len(), p.source);
                }
                println!(
                    "valid: {} PinSets, {} pins in {} files",
                    loaded.pinsets.len(),
                    loaded.pin_count(),
                    loaded.manifest_files
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
                eprintln!("invalid: {} problems", diags.0.len());
            }
            Ok(ExitCode::from(NO))
        }
        Err(e) => Err(e).context("cannot validate"),
    }
}
