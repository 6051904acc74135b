//! `cargo xtask check`: compare a run with `baselines/<profile>/`, or accept it explicitly.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use lab_harness::baseline::{self, CheckOptions, Verdict};
use lab_harness::correctness;
use lab_harness::metric::Metric;
use lab_harness::results;

use crate::paths;

#[derive(clap::Args)]
pub struct Flags {
    /// Run directory [default: the newest under results/].
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Baseline profile [default: the run's own hardware profile].
    #[arg(long)]
    pub profile: Option<String>,
    /// Baselines root.
    #[arg(long)]
    pub baselines: Option<PathBuf>,
    /// Write this run as the new baseline of its profile (token snapshots and medians).
    #[arg(long)]
    pub accept: bool,
    /// Compare only token ids and counts (skip the measured numbers).
    #[arg(long)]
    pub exact_only: bool,
    /// Relative tolerance on medians.
    #[arg(long, default_value_t = baseline::DEFAULT_TOLERANCE)]
    pub tolerance: f64,
    /// A metric whose coefficient of variation exceeds this is too noisy to compare.
    #[arg(long, default_value_t = baseline::DEFAULT_MAX_CV)]
    pub max_cv: f64,
}

fn newest_run(results_dir: &std::path::Path) -> Result<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(results_dir)
        .with_context(|| results_dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("run.json").exists())
        .collect();
    runs.sort();
    runs.pop().with_context(|| {
        format!(
            "no run under {} (run `cargo xtask bench` first)",
            results_dir.display()
        )
    })
}

pub fn run(flags: Flags) -> Result<()> {
    let run_dir = match flags.run {
        Some(r) => r,
        None => newest_run(&paths::root().join("results"))?,
    };
    let (manifest, results) = results::load_run(&run_dir)?;
    if results.is_empty() {
        bail!("{}: the run has no engine results", run_dir.display());
    }
    let profile = flags.profile.unwrap_or(manifest.profile.clone());
    let dir = flags
        .baselines
        .unwrap_or_else(|| paths::root().join("baselines"))
        .join(&profile);

    if flags.accept {
        return accept(&run_dir, &manifest, &results, &dir, &profile, flags.max_cv);
    }

    let opts = CheckOptions {
        tolerance: flags.tolerance,
        max_cv: flags.max_cv,
        exact_only: flags.exact_only,
    };
    let mut findings = baseline::check(&results, &dir, opts)?;
    // Correctness against the model's reference (independent of this machine's baselines).
    if manifest.settings.model.synthetic {
        eprintln!(
            "correctness: not checked, model `{}` is synthetic",
            manifest.settings.model.name
        );
    } else {
        let path = correctness::reference_path(&paths::root(), &manifest.settings.model.name);
        if !path.exists() {
            bail!(
                "{} is missing: `cargo xtask reference --model {}` generates it",
                path.display(),
                manifest.settings.model.name
            );
        }
        let reference = correctness::load_reference(&path)?;
        findings.extend(correctness::check(&results, &reference));
    }
    println!("check {} against {}", run_dir.display(), dir.display());
    println!("| target | scenario | prompt | metric | verdict | detail |");
    println!("|---|---|---|---|---|---|");
    for f in &findings {
        println!(
            "| {} | {} | {} | {} | {:?} | {} |",
            f.target, f.scenario, f.prompt, f.metric, f.verdict, f.detail
        );
    }
    let failing: Vec<_> = findings.iter().filter(|f| f.verdict.fails()).collect();
    if failing.is_empty() {
        println!("check passed: {} comparisons", findings.len());
        return Ok(());
    }
    if failing
        .iter()
        .any(|f| f.verdict == Verdict::MissingBaseline)
    {
        eprintln!(
            "hint: review the run, then `cargo xtask check --accept --run {}` writes a baseline",
            run_dir.display()
        );
    }
    bail!(
        "check failed: {} of {} comparisons",
        failing.len(),
        findings.len()
    )
}

/// `--accept`: the run's token snapshots and medians become the baseline of `profile`.
fn accept(
    run_dir: &std::path::Path,
    manifest: &results::RunManifest,
    results: &[results::TargetResult],
    dir: &std::path::Path,
    profile: &str,
    max_cv: f64,
) -> Result<()> {
    if manifest.status != results::RunStatus::Complete {
        bail!(
            "{}: run status is {:?}; only a complete run can become a baseline",
            run_dir.display(),
            manifest.status
        );
    }
    for path in baseline::accept(results, dir)? {
        eprintln!("wrote {}", path.display());
    }
    // Accepting is allowed, but say which numbers will never compare cleanly.
    for r in results {
        for sc in &r.stats {
            for p in &sc.prompts {
                for m in Metric::CHECKED {
                    if let Some(s) = p.get(m).filter(|s| s.cv > max_cv) {
                        eprintln!(
                            "warning: {} {} {} {m} has CV {:.1} % (> {:.1} %): check will call it too noisy on this machine",
                            r.target,
                            sc.id,
                            p.prompt,
                            s.cv * 100.0,
                            max_cv * 100.0
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "accepted {} as the baseline of profile `{profile}`",
        manifest.run_id
    );
    Ok(())
}
