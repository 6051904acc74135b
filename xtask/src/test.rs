//! `cargo xtask test`: the README's test command. Builds every test target of the workspace
//! (which also builds the engine binaries the end-to-end tests start and the `model-volume`
//! tool) in one cargo invocation, so shared dependencies compile once with one feature set;
//! materialises the model volume (the tests use the real model) and the pinned Python
//! environment (the PyTorch engine's tests); then runs every test.

use anyhow::Result;
use xshell::cmd;

use crate::paths;

/// `lab_testkit::PROFILE_ENV`: the hardware profile the tests compare with (the xtask does not
/// link the test kit).
const PROFILE_ENV: &str = "LAB_TEST_PROFILE";

/// The tests that compare token ids with this machine's committed baseline (when it has one).
const BASELINE_TESTS: [&str; 3] = [
    "bench_and_check_on_the_real_model",
    "s1_in_a_container_matches_the_baselines",
    "pytorch_s1_matches_its_token_baselines",
];

#[derive(clap::Args)]
pub struct Flags {
    /// When this machine's hardware profile has committed baselines, run the tests that use them
    /// once more as if it had none (`LAB_TEST_PROFILE`), so the portable path runs too (CI does).
    #[arg(long)]
    pub portable_pass: bool,
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
    let profile = std::env::var(PROFILE_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(machine_profile);
    // The end-to-end tests run the real model, smollm2-135m.
    let has_baseline =
        lab_results::baseline::dir_for(&paths::root().join("baselines"), &profile, "smollm2-135m")
            .is_dir();
    if has_baseline {
        eprintln!("engine token ids: compared with baselines/{profile}/smollm2-135m");
    } else {
        eprintln!(
            "engine token ids: NO BASELINE for hardware profile `{profile}` and model smollm2-135m: the end-to-end tests check counts, determinism and the reference (the portable path)"
        );
    }
    let args = flags.cargo_args;
    cmd!(sh, "cargo test --workspace --release {args...}").run()?;
    if flags.portable_pass && has_baseline {
        eprintln!("portable pass: the baseline tests again, as on a machine without baselines");
        let _p = sh.push_env(PROFILE_ENV, "portable-pass-no-such-profile");
        let filters = BASELINE_TESTS;
        cmd!(sh, "cargo test --workspace --release -- {filters...}").run()?;
    }
    Ok(())
}

/// This machine's CPU hardware profile with every logical CPU, as the end-to-end tests see it.
fn machine_profile() -> String {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    lab_results::provenance::hardware_profile(
        &lab_harness::provenance::host(),
        &lab_protocol::Device::Cpu,
        threads,
    )
}
