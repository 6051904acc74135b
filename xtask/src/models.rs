//! `cargo xtask models`: builds and runs the `model-volume` tool.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::paths;

#[derive(clap::Args)]
pub struct Flags {
    /// Also build a seeded random-weight model with this Llama shape (`llama-3.2-1b`, `tiny`).
    #[arg(long)]
    pub synthetic: Vec<String>,
    /// Seed for synthetic weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Builds the tool, then materialises smollm2-135m and the requested synthetic shapes.
pub fn run(flags: Flags) -> Result<()> {
    let sh = paths::shell()?;
    eprintln!("building model-volume (release)");
    cmd!(sh, "cargo build --release --quiet -p model-volume").run()?;
    materialize(&sh, &flags.synthetic, flags.seed)
}

/// Runs the already built tool: smollm2-135m (a no-op when it verifies), then synthetic shapes.
pub fn materialize(sh: &Shell, synthetic: &[String], seed: u64) -> Result<()> {
    let tool = paths::release_binary("model-volume");
    let models = paths::models_dir();
    cmd!(sh, "{tool} smollm2 --models-dir {models}").run()?;
    let seed = seed.to_string();
    for shape in synthetic {
        cmd!(
            sh,
            "{tool} synthetic --models-dir {models} --shape {shape} --seed {seed}"
        )
        .run()?;
    }
    Ok(())
}

/// Materialises the volume entry `name` if it is one the lab knows how to build.
pub fn ensure(name: &str) -> Result<()> {
    let synthetic: Vec<String> = name
        .strip_prefix("synthetic-")
        .map(|s| vec![s.to_string()])
        .unwrap_or_default();
    if name == "smollm2-135m" || !synthetic.is_empty() {
        run(Flags { synthetic, seed: 0 })?;
    }
    Ok(())
}
