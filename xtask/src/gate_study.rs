//! `cargo xtask gate-study`: how often `check` cries wolf on this machine and how large a
//! slowdown it catches, from recorded runs of one hardware profile and model
//! (`lab_results::gate::study`); writes `study.json` and `study.md` into a run directory and, with
//! `--write-spread`, the evidence `check` judges with (`baselines/<profile>/<model>/spread.json`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lab_results::gate::{self, StudyRules};
use lab_results::results::{self, RunManifest, RunStatus, TargetResult};
use lab_results::study;

use crate::paths;

#[derive(clap::Args)]
pub struct Flags {
    /// Hardware profile [default: the profile of the latest run under results/].
    #[arg(long)]
    pub profile: Option<String>,
    /// Model whose runs are studied.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Run directories to study; repeatable [default: every complete run under results/ of
    /// the profile and model, made from a clean tree].
    #[arg(long = "run")]
    pub runs: Vec<PathBuf>,
    /// Also study runs made from a tree with uncommitted changes (said in the study).
    #[arg(long)]
    pub include_dirty: bool,
    /// Only runs of this measurement profile (`budget`, `standard`, …).
    #[arg(long)]
    pub measure: Option<String>,
    /// The tolerance and judgeable ceiling `check` uses.
    #[arg(long, default_value_t = lab_results::baseline::DEFAULT_TOLERANCE)]
    pub tolerance: f64,
    #[arg(long, default_value_t = gate::DEFAULT_MAX_THRESHOLD)]
    pub max_threshold: f64,
    /// The slowdown the synthetic A/B trials apply (0.1 = each step 10 % longer).
    #[arg(long, default_value_t = gate::DEFAULT_SLOWDOWN)]
    pub slowdown: f64,
    /// Fewest runs a spread is taken from (the gate's own minimum; fewer shows why it is one).
    #[arg(long, default_value_t = gate::MIN_RUNS)]
    pub min_runs: usize,
    /// Runs on each side of a trial: the mean of N runs judged against the mean of N others, as
    /// `check` judges a `bench --repeat N` run against a baseline accepted from N runs.
    #[arg(long, default_value_t = 1)]
    pub runs_a_side: usize,
    /// Where `study.json` and `study.md` go [default: results/gate-study-<date>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the spreads as the evidence `check` uses for this profile and model.
    #[arg(long)]
    pub write_spread: bool,
}

pub fn run(flags: Flags) -> Result<()> {
    if !(flags.slowdown > 0.0 && flags.slowdown <= 1.0) {
        bail!(
            "--slowdown {}: a share above 0 and at most 1",
            flags.slowdown
        );
    }
    let results_dir = paths::root().join("results");
    let profile = match &flags.profile {
        Some(p) => p.clone(),
        None => {
            let latest = crate::check::latest_run(&results_dir)?;
            results::load_run(&latest)?.0.profile
        }
    };
    let runs = select_runs(&flags, &results_dir, &profile)?;
    if flags.runs_a_side == 0 {
        bail!("--runs-a-side 0: a side has at least one run");
    }

    let rules = StudyRules {
        tolerance: flags.tolerance,
        max_threshold: flags.max_threshold,
        slowdown: flags.slowdown,
        min_runs: flags.min_runs,
        runs_a_side: flags.runs_a_side,
    };
    let s = study::study(&profile, &flags.model, &runs, &rules);
    if s.rows.is_empty() {
        bail!(
            "{} runs, but no number was measured in {} or more of them: nothing to study",
            runs.len(),
            flags.min_runs
        );
    }
    let out = flags.out.clone().unwrap_or_else(|| {
        let day: String = runs
            .iter()
            .map(|(m, _)| m.provenance.started_at.clone())
            .max()
            .unwrap_or_default()
            .chars()
            .take(10)
            .filter(|c| c.is_ascii_digit())
            .collect();
        results_dir.join(format!("gate-study-{day}"))
    });
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    results::write_json_atomic(&out.join("study.json"), &s)?;
    let md = lab_report::gate_study::markdown(&s);
    results::write_atomic(&out.join("study.md"), md.as_bytes())?;
    let t = &s.totals;
    println!(
        "gate study of {} runs ({} numbers): A/A flagged {}; synthetic {:.0} % A/B detected {}; real A/B detected {}",
        s.runs.len(),
        s.rows.len(),
        gate::rate(t.aa_flagged, t.aa_judged),
        s.slowdown * 100.0,
        gate::rate(t.ab_detected, t.ab_judged),
        gate::rate(t.real_ab_detected, t.real_ab_judged)
    );
    eprintln!("study: {}", out.join("study.md").display());
    if flags.write_spread && flags.min_runs < gate::MIN_RUNS {
        bail!(
            "--write-spread with --min-runs {}: check judges only with spreads of {} or more runs",
            flags.min_runs,
            gate::MIN_RUNS
        );
    }
    if flags.write_spread {
        let dir = lab_results::baseline::dir_for(
            &paths::root().join("baselines"),
            &profile,
            &flags.model,
        );
        write_spread(&dir, &s)?;
    }
    Ok(())
}

/// The runs studied: `--run` as given (each of the profile and model, else refused), or every
/// complete, clean run of them under `results/` (dirty ones with `--include-dirty`), of the
/// `--measure` profile when one is named.
fn select_runs(
    flags: &Flags,
    results_dir: &Path,
    profile: &str,
) -> Result<Vec<(RunManifest, Vec<TargetResult>)>> {
    let dirs = if flags.runs.is_empty() {
        run_dirs(results_dir)?
    } else {
        flags.runs.clone()
    };
    let mut runs: Vec<(RunManifest, Vec<TargetResult>)> = Vec::new();
    for dir in dirs {
        let (m, r) = results::load_run(&dir)?;
        let skip = |why: String| eprintln!("skipped {}: {why}", dir.display());
        if m.profile != profile || m.settings.model.name != flags.model {
            if !flags.runs.is_empty() {
                bail!(
                    "{}: measured `{}` on `{}`, the study is of `{}` on `{profile}`",
                    dir.display(),
                    m.settings.model.name,
                    m.profile,
                    flags.model
                );
            }
            continue;
        }
        let measure = m.plan.as_ref().map(|p| p.measure.name().to_string());
        if let Some(want) = &flags.measure {
            if measure.as_deref() != Some(want.as_str()) {
                skip(format!("measurement profile {measure:?}, not {want}"));
                continue;
            }
        }
        if m.status != RunStatus::Complete {
            skip(format!("status {:?}", m.status));
            continue;
        }
        if m.provenance.git_dirty && !flags.include_dirty {
            skip("made from a tree with uncommitted changes (--include-dirty studies it)".into());
            continue;
        }
        runs.push((m, r));
    }
    if runs.is_empty() {
        bail!(
            "no run of `{}` on `{profile}` to study under {}",
            flags.model,
            results_dir.display()
        );
    }
    Ok(runs)
}

fn write_spread(dir: &Path, s: &study::Study) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(gate::SPREAD_FILE);
    results::write_json_atomic(&path, &s.spread_file())?;
    eprintln!("evidence for check: {}", path.display());
    Ok(())
}

/// Every run directory under `results/` (those with a `run.json`).
fn run_dirs(results_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results_dir)
        .with_context(|| results_dir.display().to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("run.json").exists())
        .collect();
    dirs.sort();
    Ok(dirs)
}
