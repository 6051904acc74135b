//! `cargo xtask test`: the README's test command. Materialises the model volume (the tests use
//! the real model), builds the engine binaries the end-to-end tests start, then runs every test
//! of the workspace in release mode (one shared build of the heavy engine dependencies).

use anyhow::Result;
use xshell::cmd;

use crate::paths;

#[derive(clap::Args)]
pub struct Flags {
    /// Extra arguments passed to `cargo test` (after `--workspace --release`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_args: Vec<String>,
}

pub fn run(flags: Flags) -> Result<()> {
    crate::models::run(crate::models::Flags {
        synthetic: Vec::new(),
        seed: 0,
    })?;
    let sh = paths::shell()?;
    eprintln!("building engine binaries (release)");
    cmd!(sh, "cargo build --release -p engine-candle -p model-volume").run()?;
    let models = paths::models_dir();
    let _env = sh.push_env("LAB_MODELS_DIR", models);
    // Snapshots are never accepted here: a mismatch fails and leaves a .snap.new for review.
    let _insta = sh.push_env("INSTA_UPDATE", "no");
    let args = flags.cargo_args;
    cmd!(sh, "cargo test --workspace --release {args...}").run()?;
    Ok(())
}
