//! `cargo xtask bench`: the flags ([`lab_harness::options::Options`], plus where results go,
//! whether to build and the price) resolved into a [`BenchSpec`] by
//! [`lab_harness::options::resolve`], made runnable here by [`lab_harness::prepare`] (with this
//! checkout's tools: [`Shop`]), run by [`lab_harness::bench`] into `results/<run-id>/`; then
//! the summary table is printed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use lab_harness::options::{Options, Telemetry};
use lab_harness::prepare::Workshop;
use lab_harness::{provenance, BenchPlan, BenchSpec};
use lab_results::provenance::Provenance;
use xshell::cmd;

use crate::paths;

#[derive(clap::Args)]
pub struct Flags {
    #[command(flatten)]
    pub run: Options,
    /// Where run directories go.
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Use the engine binaries already built (skip `cargo build`).
    #[arg(long)]
    pub no_build: bool,
    #[command(flatten)]
    pub price: crate::report::PriceFlags,
}

/// This checkout's tools, for [`lab_harness::prepare`].
pub struct Shop;

fn lab_error(e: anyhow::Error) -> lab_harness::Error {
    lab_harness::Error::msg(format!("{e:#}"))
}

impl Workshop for Shop {
    fn root(&self) -> PathBuf {
        paths::root()
    }
    fn target_dir(&self) -> PathBuf {
        paths::target_dir()
    }
    fn models_dir(&self) -> PathBuf {
        paths::models_dir()
    }
    fn build_model(&self, name: &str) -> lab_harness::Result<()> {
        crate::models::ensure(name).map_err(lab_error)
    }
    fn python(&self) -> lab_harness::Result<PathBuf> {
        crate::pyenv::ensure(false).map_err(lab_error)
    }
    fn build_engines(&self, packages: &[&str], gpu: bool) -> lab_harness::Result<()> {
        build_packages(packages, gpu).map_err(lab_error)
    }
}

/// [`lab_harness::prepare::prepare`] with this checkout's tools and the process's Ctrl-C flag:
/// a Ctrl-C during the volume, the builds or the containers ends it as
/// [`lab_harness::Interrupted`].
pub fn prepare(
    spec: BenchSpec,
    prov: Provenance,
    results_dir: &Path,
    build: bool,
) -> Result<BenchPlan> {
    let interrupted = interrupt_flag()?;
    lab_harness::prepare::prepare(spec, prov, results_dir, build, &Shop, &interrupted).map_err(
        |e| {
            if interrupted.load(Ordering::SeqCst) {
                lab_harness::Interrupted.into()
            } else {
                e.into()
            }
        },
    )
}

/// `cargo build --release` of every package in one cargo invocation (with the `cuda` feature for
/// GPU runs), so crates the engines share compile once, with one feature set.
pub fn build_packages(packages: &[&str], gpu: bool) -> Result<()> {
    let sh = paths::shell()?;
    crate::deps::ensure_for(packages)?;
    let mut args: Vec<String> = Vec::new();
    for p in packages {
        args.extend(["-p".to_string(), p.to_string()]);
    }
    if gpu {
        // Each package's own `cuda` feature (every engine on the CUDA catalog has one).
        let features: Vec<String> = packages.iter().map(|p| format!("{p}/cuda")).collect();
        args.extend(["--features".into(), features.join(",")]);
    }
    eprintln!(
        "building {} (release, one cargo invocation)",
        packages.join(", ")
    );
    let started = std::time::Instant::now();
    cmd!(sh, "cargo build --release {args...}")
        .run()
        .with_context(|| format!("building {}", packages.join(", ")))?;
    eprintln!(
        "built in {}",
        lab_harness::progress::fmt_duration(started.elapsed())
    );
    Ok(())
}

pub fn run(flags: Flags) -> Result<()> {
    let root = paths::root();
    if flags.run.runtime.iter().all(|r| r == "auto") && !flags.run.dry_run {
        crate::deps::ensure_container_runtime();
    }
    let mut prov = provenance::collect(
        &root,
        lab_results::provenance::rfc3339(lab_results::provenance::now_unix()),
    );
    let spec = lab_harness::options::resolve(&flags.run, flags.price.price()?, &prov, &root)?;
    interrupt_flag()?;
    let results_dir = flags
        .results_dir
        .clone()
        .unwrap_or_else(|| root.join("results"));
    // The GPU side first: restore a lock a killed run left, refuse what cannot be done, lock.
    // The guard lives until the end of this function, so every way out restores the clocks.
    let gpu = crate::gpu::GpuSetup::new(
        &spec,
        flags.run.dry_run,
        flags.run.telemetry == Telemetry::On,
        lab_gpu::open,
        lab_gpu::lock::default_state_path(),
    )?;
    let lock = gpu.lock()?;
    gpu.record(&mut prov, lock.as_ref());
    let plan = prepare(spec, prov, &results_dir, !flags.no_build)?;
    let (manifest, _) = execute(&plan, gpu.sampling().as_ref())?;
    if let Some(lock) = lock {
        let done = lock.release()?;
        eprintln!("GPU clocks restored: {}", done.join(", "));
    }
    let failed: Vec<_> = manifest
        .targets
        .iter()
        .filter(|t| t.status == lab_results::results::TargetStatus::Failed)
        .map(|t| t.target.clone())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} engine(s) failed: {} (finished results are kept in {})",
            failed.len(),
            failed.join(", "),
            plan.run_dir.display()
        );
    }
    Ok(())
}

/// The process's Ctrl-C flag; the handler is installed the first time it is asked for (by
/// `bench` and `reproduce` before anything a Ctrl-C could leave half done: the clock lock, the
/// builds, the model volume).
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    if let Some(f) = FLAG.get() {
        return Ok(f.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || f.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    Ok(FLAG.get_or_init(|| flag).clone())
}

/// Runs a prepared plan with Ctrl-C handling and prints its summary table; an interrupted run
/// returns [`lab_harness::Interrupted`] (after everything it held was dropped).
pub fn execute(
    plan: &BenchPlan,
    sampling: Option<&lab_harness::telemetry::GpuSampling>,
) -> Result<(
    lab_results::results::RunManifest,
    Vec<lab_results::results::TargetResult>,
)> {
    let interrupted = interrupt_flag()?;

    let (manifest, results) = lab_harness::bench_with(plan, &interrupted, sampling)?;
    println!("{}", lab_report::render_markdown(&manifest, &results));
    eprintln!("results: {}", plan.run_dir.display());
    eprintln!(
        "HTML report: {}",
        plan.run_dir.join(lab_report::HTML_FILE).display()
    );
    eprintln!(
        "compare with baselines: cargo xtask check --run {}",
        plan.run_dir.display()
    );
    if interrupted.load(Ordering::SeqCst) {
        // Returned, not `exit`ed: everything this run holds is dropped on the way out.
        return Err(lab_harness::Interrupted.into());
    }
    Ok((manifest, results))
}
