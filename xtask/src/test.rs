//! `cargo xtask test`: the README's test command. Builds every test target of the workspace
//! (which also builds the engine binaries the end-to-end tests start and the `model-volume`
//! tool) in one cargo invocation, so shared dependencies compile once with one feature set;
//! materialises the model volume (the tests use the real model) and the pinned Python
//! environment (the PyTorch engine's tests); then runs every test.

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
    crate::deps::ensure_for(&["--workspace"])?;
    let sh = paths::shell()?;
    eprintln!("building the workspace's tests and binaries (release)");
    cmd!(sh, "cargo test --workspace --release --no-run").run()?;
    crate::models::materialize(&sh, &[], 0)?;
    // The PyTorch engine's tests start it with this interpreter.
    let python = crate::pyenv::ensure(false)?;
    let _py = sh.push_env("LAB_PYTHON", python);
    let models = paths::models_dir();
    let _env = sh.push_env("LAB_MODELS_DIR", models);
    // Snapshots are never accepted here: a mismatch fails and leaves a .snap.new for review.
    let _insta = sh.push_env("INSTA_UPDATE", "no");
    match lab_harness::container::detect(&paths::root()) {
        (Some(e), _) => eprintln!("container tests: with {}", e.version),
        (None, why) => eprintln!(
            "container tests: SKIPPED ({why}); install podman and runc to run them (CI does, and sets LAB_REQUIRE_CONTAINERS=1)"
        ),
    }
    let args = flags.cargo_args;
    cmd!(sh, "cargo test --workspace --release {args...}").run()?;
    Ok(())
}
