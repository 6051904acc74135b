//! `cargo xtask check`: compare a run with `baselines/<profile>/<model>/`, or accept it
//! explicitly. Exit status: 0 passed, 1 failed (a regression, a token mismatch, bad input), 2 no
//! baseline exists for the run's hardware profile or model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lab_report as report;
use lab_results::baseline::{self, CheckOptions, Finding, Verdict};
use lab_results::check::{CheckOutcome, CheckRecord};
use lab_results::correctness;
use lab_results::metric::Metric;
use lab_results::results::{self, RunManifest, TargetResult};

use crate::paths;

#[derive(clap::Args)]
pub struct Flags {
    /// Run directory [default: the run under results/ that started last].
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Baseline profile [default: the run's own hardware profile]. Another profile's numbers are
    /// not comparable: only with --exact-only.
    #[arg(long)]
    pub profile: Option<String>,
    /// Baselines root (holding `<profile>/<model>/`).
    #[arg(long)]
    pub baselines: Option<PathBuf>,
    /// Write this run as the new baseline of its profile and model (token snapshots, numbers and
    /// their intervals).
    #[arg(long)]
    pub accept: bool,
    /// With --accept: allow a run made from a tree with uncommitted changes.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Compare only token ids and counts (skip the measured numbers).
    #[arg(long)]
    pub exact_only: bool,
    /// Do not keep the verdicts beside the run (`check.json`, shown by its reports).
    #[arg(long)]
    pub no_record: bool,
    /// Print every comparison as a table (the summary names only what failed or could not be
    /// judged; `check.json` keeps them all).
    #[arg(long)]
    pub table: bool,
    #[command(flatten)]
    pub rules: Rules,
}

/// How numbers are compared (`check` and `reproduce`).
#[derive(clap::Args)]
pub struct Rules {
    /// Relative shift of a metric that is not a change (the default of every metric).
    #[arg(long, default_value_t = baseline::DEFAULT_TOLERANCE)]
    pub tolerance: f64,
    /// A metric's own threshold (`decode_tok_per_s=0.2`: a 20 % drop fails); repeatable.
    #[arg(long = "threshold", value_name = "METRIC=FRACTION")]
    pub thresholds: Vec<String>,
    /// A run whose robust CV within itself (over 5 or more samples) is above this was
    /// disturbed: its number is not compared.
    #[arg(long, default_value_t = baseline::DEFAULT_MAX_CV)]
    pub max_cv: f64,
    /// The widest alarm threshold at which a number is judged: where this machine's between-run
    /// spread (the gate study's) puts it beyond, the verdict is "cannot judge here".
    #[arg(long, default_value_t = lab_results::gate::DEFAULT_MAX_THRESHOLD)]
    pub max_threshold: f64,
    /// The largest share of a scenario's measured windows that may have run throttled (power
    /// cap, thermal, HW slowdown; from GPU telemetry) for its numbers to be compared.
    #[arg(long, default_value_t = lab_results::check::DEFAULT_MAX_THROTTLED)]
    pub max_throttled: f64,
}

impl Rules {
    pub fn options(&self, exact_only: bool) -> Result<CheckOptions> {
        if !(0.0..=1.0).contains(&self.max_throttled) {
            bail!(
                "--max-throttled {}: a share of windows, between 0 and 1",
                self.max_throttled
            );
        }
        if !(self.max_threshold > 0.0 && self.max_threshold.is_finite()) {
            bail!(
                "--max-threshold {}: a positive fraction (0.15 = 15 %)",
                self.max_threshold
            );
        }
        let mut opts = CheckOptions {
            tolerance: self.tolerance,
            max_cv: self.max_cv,
            max_threshold: self.max_threshold,
            exact_only,
            ..CheckOptions::default()
        };
        for t in &self.thresholds {
            let (m, v) = baseline::parse_threshold(t)?;
            opts.thresholds.insert(m, v);
        }
        Ok(opts)
    }
}

/// No baseline exists for the run's hardware profile or model (exit status 2): not a
/// regression, a missing reference point.
#[derive(Debug)]
pub struct NoBaseline(pub String);

impl std::fmt::Display for NoBaseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoBaseline {}

/// The run under `results_dir` whose recorded start time is the latest (directory names sort by
/// nothing in particular: `synthetic-…` would beat a dated id).
pub fn latest_run(results_dir: &Path) -> Result<PathBuf> {
    let mut runs: Vec<(String, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(results_dir).with_context(|| results_dir.display().to_string())? {
        let dir = e?.path();
        let manifest = dir.join("run.json");
        if !manifest.exists() {
            continue;
        }
        let m: RunManifest = results::read_json(&manifest)?;
        runs.push((m.provenance.started_at, dir));
    }
    runs.sort();
    let (started, dir) = runs.pop().with_context(|| {
        format!(
            "no run under {} (run `cargo xtask bench` first)",
            results_dir.display()
        )
    })?;
    eprintln!(
        "checking {} (started {started}, the latest of the runs under {})",
        dir.display(),
        results_dir.display()
    );
    Ok(dir)
}

pub fn run(flags: Flags) -> Result<()> {
    let opts = flags.rules.options(flags.exact_only)?;
    let run_dir = match &flags.run {
        Some(r) => r.clone(),
        None => latest_run(&paths::root().join("results"))?,
    };
    let (manifest, results) = results::load_run(&run_dir)?;
    if results.is_empty() {
        bail!("{}: the run has no engine results", run_dir.display());
    }
    let profile = flags.profile.clone().unwrap_or(manifest.profile.clone());
    if profile != manifest.profile && !flags.exact_only {
        bail!(
            "--profile {profile}: the run was measured on `{}`; numbers from other hardware are not comparable (add --exact-only to compare token ids only)",
            manifest.profile
        );
    }
    if !flags.exact_only {
        refuse_throttled(&run_dir, &results, flags.rules.max_throttled)?;
    }
    let root = flags
        .baselines
        .clone()
        .unwrap_or_else(|| paths::root().join("baselines"));
    let model = &manifest.settings.model;
    let dir = baseline::dir_for(&root, &profile, &model.name);
    if flags.accept {
        return accept(&flags, &run_dir, &manifest, &results, &dir);
    }

    // Correctness against the model's reference (independent of this machine's baselines).
    let mut findings = correctness_findings(&manifest, &results)?;
    let keep = |against: String, outcome: CheckOutcome, findings: &[Finding]| {
        if !flags.no_record {
            let rec = CheckRecord {
                against,
                outcome,
                findings: findings.to_vec(),
            };
            record(&run_dir, &manifest, &results, &rec);
        }
    };
    if let Some(missing) = missing_baseline(&root, &profile, &model.name) {
        if flags.table {
            print_findings(&run_dir, &dir, &findings);
        } else {
            print_correctness(&run_dir, &dir, &findings);
        }
        keep(
            "no baseline".into(),
            CheckOutcome::NoBaseline(missing.clone()),
            &findings,
        );
        return Err(NoBaseline(format!(
            "{missing}; review the run, then `cargo xtask check --accept --run {}` creates it",
            run_dir.display()
        ))
        .into());
    }
    baseline::ensure_comparable(&dir, &profile, &model.name, &model.sha256)?;
    let study = baseline::read_spread(&dir)?;
    findings.extend(baseline::check(
        &results,
        &dir,
        CheckOptions {
            spread: study.clone(),
            ..opts
        },
    )?);
    if flags.table {
        print_findings(&run_dir, &dir, &findings);
    }
    let against = format!("{} ({profile}, {})", dir.display(), model.name);
    let summary = Summary::of(&findings);
    summary.print(&run_dir, &dir, study.as_ref(), &manifest, &findings);
    let outcome = summary.outcome();
    keep(against, outcome.clone(), &findings);
    match outcome {
        CheckOutcome::Passed { .. } => {
            println!("check {outcome}");
            Ok(())
        }
        CheckOutcome::Incomplete { .. } => Err(NoBaseline(format!(
            "check {outcome} ({}); review the run, then `cargo xtask check --accept --run {}` writes them",
            summary.missing_scenarios(&findings),
            run_dir.display()
        ))
        .into()),
        _ => bail!("check {outcome}"),
    }
}

/// What a person reads after `check`: counts per verdict, one line per target, and only the
/// comparisons that failed or could not be judged.
struct Summary {
    comparisons: usize,
    failing: usize,
    missing: usize,
    unjudged: usize,
}

impl Summary {
    fn of(findings: &[Finding]) -> Summary {
        let count = |f: &dyn Fn(Verdict) -> bool| findings.iter().filter(|x| f(x.verdict)).count();
        Summary {
            comparisons: findings.len(),
            failing: count(&|v| v.fails() && v != Verdict::MissingBaseline),
            missing: count(&|v| v == Verdict::MissingBaseline),
            unjudged: count(&|v| matches!(v, Verdict::CannotJudge | Verdict::TooNoisy)),
        }
    }

    fn outcome(&self) -> CheckOutcome {
        if self.failing > 0 {
            CheckOutcome::Failed {
                failing: self.failing + self.missing,
                comparisons: self.comparisons,
            }
        } else if self.missing > 0 {
            CheckOutcome::Incomplete {
                missing: self.missing,
                comparisons: self.comparisons,
            }
        } else {
            CheckOutcome::Passed {
                comparisons: self.comparisons,
                unjudged: self.unjudged,
            }
        }
    }

    /// `s2, s3 and s5 of 10 targets`.
    fn missing_scenarios(&self, findings: &[Finding]) -> String {
        let mut scenarios: Vec<&str> = Vec::new();
        let mut targets: Vec<&str> = Vec::new();
        for f in findings
            .iter()
            .filter(|f| f.verdict == Verdict::MissingBaseline)
        {
            if !scenarios.contains(&f.scenario.as_str()) {
                scenarios.push(&f.scenario);
            }
            if !targets.contains(&f.target.as_str()) {
                targets.push(&f.target);
            }
        }
        format!(
            "no baseline for {} of {} target{}",
            scenarios.join(", "),
            targets.len(),
            if targets.len() == 1 { "" } else { "s" }
        )
    }

    fn print(
        &self,
        run_dir: &Path,
        dir: &Path,
        study: Option<&lab_results::gate::SpreadFile>,
        manifest: &RunManifest,
        findings: &[Finding],
    ) {
        println!("check {} against {}", run_dir.display(), dir.display());
        match study {
            Some(s) => println!(
                "evidence: the gate study over {} runs of this profile ({}); numbers it has no spread for are judged only on this run's repeats",
                s.runs.len(),
                dir.join(lab_results::gate::SPREAD_FILE).display()
            ),
            None => println!(
                "evidence: no gate study for this profile ({} is missing): numbers are judged only on this run's repeats (--repeat 5 or more), else not at all",
                dir.join(lab_results::gate::SPREAD_FILE).display()
            ),
        }
        if let Some(plan) = &manifest.plan {
            println!("{}", profile_line(plan.measure));
        }
        // One line per target: verdict counts and the change it can detect on S1 decode.
        let mut targets: Vec<&str> = Vec::new();
        for f in findings {
            if !targets.contains(&f.target.as_str()) {
                targets.push(&f.target);
            }
        }
        for t in targets {
            let mine: Vec<&Finding> = findings.iter().filter(|f| f.target == t).collect();
            let mut counts: Vec<(Verdict, usize)> = Vec::new();
            for f in &mine {
                match counts.iter_mut().find(|(v, _)| *v == f.verdict) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((f.verdict, 1)),
                }
            }
            let counts: Vec<String> = counts
                .iter()
                .map(|(v, n)| format!("{n} {}", v.label()))
                .collect();
            let detects = detectable_decode(&mine)
                .map(|d| format!("; detects S1 decode changes ≥ {d}"))
                .unwrap_or_default();
            println!("  {t}: {}{detects}", counts.join(", "));
        }
        for f in findings
            .iter()
            .filter(|f| f.verdict.fails() && f.verdict != Verdict::MissingBaseline)
        {
            println!(
                "  {}: {} {} {} {}: {}",
                f.verdict.label(),
                f.target,
                f.scenario,
                f.prompt,
                f.metric,
                f.detail
            );
        }
        if self.unjudged > 0 {
            let example = findings
                .iter()
                .find(|f| f.verdict == Verdict::CannotJudge)
                .or_else(|| findings.iter().find(|f| f.verdict == Verdict::TooNoisy));
            println!(
                "  not judged on this machine: {} of {} comparisons (--table lists them){}",
                self.unjudged,
                self.comparisons,
                example
                    .map(|f| format!(
                        "; e.g. {} {} {} {}: {}",
                        f.target,
                        f.scenario,
                        f.prompt,
                        f.metric,
                        f.detail.rsplit("; ").next().unwrap_or(&f.detail)
                    ))
                    .unwrap_or_default()
            );
        }
    }
}

/// The median over prompts of the detectable S1 decode change a target's findings state.
/// The measurement profile, and what a small one means for the verdicts.
fn profile_line(measure: lab_results::measure::Profile) -> String {
    use lab_results::measure::Profile;
    let first_look = matches!(measure, Profile::Quick | Profile::Budget);
    format!(
        "measured with the `{}` profile{}",
        measure.name(),
        if first_look {
            " — a first look: its numbers are judged only where this machine's spread allows; publish and gate from `standard` with --repeat"
        } else {
            ""
        }
    )
}

fn detectable_decode(findings: &[&Finding]) -> Option<String> {
    let mut d: Vec<f64> = findings
        .iter()
        .filter(|f| f.scenario == "s1" && f.metric == Metric::DecodeTokPerS.name())
        .filter_map(|f| {
            let (_, tail) = f.detail.split_once("detects ")?;
            tail.split_once(" %")?.0.parse::<f64>().ok()
        })
        .collect();
    if d.is_empty() {
        return None;
    }
    d.sort_by(f64::total_cmp);
    Some(format!("{:.1} %", d[d.len() / 2]))
}

/// Refuses a run whose GPU was throttled in more than `max` of a scenario's windows: its
/// numbers measure the cooling, not the engine.
fn refuse_throttled(run_dir: &Path, results: &[TargetResult], max: f64) -> Result<()> {
    let throttled = lab_results::check::throttled_beyond(results, max);
    if !throttled.is_empty() {
        bail!(
            "{}: the GPU was throttled during the measurement, so its numbers are not comparable (more than {:.0} % of windows, --max-throttled): {}. Re-run with the GPU cooled or clocks locked lower (--lock-clocks base), or compare token ids only (--exact-only)",
            run_dir.display(),
            max * 100.0,
            throttled.join("; ")
        );
    }
    Ok(())
}

/// Keeps the verdicts beside the run and re-renders its reports with them. A run directory that
/// cannot be written (read-only, full) only loses this record: the verdict stands.
/// Paths inside the checkout are kept relative to it (a record may be committed with the run).
fn record(run_dir: &Path, manifest: &RunManifest, results: &[TargetResult], rec: &CheckRecord) {
    let root = format!("{}/", paths::root().display());
    let rel = |s: &str| s.replace(&root, "");
    let rec = &CheckRecord {
        against: rel(&rec.against),
        outcome: match &rec.outcome {
            CheckOutcome::NoBaseline(why) => CheckOutcome::NoBaseline(rel(why)),
            o => o.clone(),
        },
        findings: rec
            .findings
            .iter()
            .map(|f| Finding {
                detail: rel(&f.detail),
                ..f.clone()
            })
            .collect(),
    };
    let kept = results::write_json_atomic(&run_dir.join(lab_results::check::CHECK_FILE), rec)
        .and_then(|()| report::write_run(run_dir, manifest, results));
    match kept {
        Ok(()) => eprintln!(
            "verdicts kept in {} and shown in {}",
            run_dir.join(lab_results::check::CHECK_FILE).display(),
            run_dir.join(report::HTML_FILE).display()
        ),
        Err(e) => eprintln!("warning: the verdicts could not be kept beside the run: {e}"),
    }
}

/// Why there is no baseline to compare with, if there is none: no directory for the profile, or
/// none for the model within it (naming what exists).
fn missing_baseline(root: &Path, profile: &str, model: &str) -> Option<String> {
    let listing = |dir: &Path| -> String {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir() && e.file_name() != "reference")
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    };
    let pdir = root.join(profile);
    if !pdir.is_dir() {
        return Some(format!(
            "no baseline for hardware profile `{profile}` ({} does not exist; profiles with baselines: {})",
            pdir.display(),
            listing(root)
        ));
    }
    let mdir = pdir.join(model);
    if !mdir.is_dir() {
        return Some(format!(
            "no baseline for model `{model}` on hardware profile `{profile}` ({} does not exist; models with baselines there: {})",
            mdir.display(),
            listing(&pdir)
        ));
    }
    None
}

fn correctness_findings(manifest: &RunManifest, results: &[TargetResult]) -> Result<Vec<Finding>> {
    let model = &manifest.settings.model;
    if model.synthetic {
        eprintln!(
            "correctness: not checked, model `{}` is synthetic",
            model.name
        );
        return Ok(Vec::new());
    }
    let scenarios = &manifest.settings.scenarios;
    if !scenarios
        .iter()
        .any(|s| lab_results::scenario::is_correctness_scenario(s))
    {
        // Not asked for, so not missing: said, and not a failure.
        println!(
            "correctness: not measured in this run (its scenarios: {}); the default scenarios or `--scenario ref` measure it",
            scenarios.join(", ")
        );
        return Ok(Vec::new());
    }
    let path = correctness::reference_path(&paths::root(), &model.name);
    if !path.exists() {
        bail!(
            "{} is missing: `cargo xtask reference --model {}` generates it",
            path.display(),
            model.name
        );
    }
    let reference = correctness::load_reference(&path)?;
    // Correctness scenarios run in the first run of the plan only.
    let first: Vec<TargetResult> = results.iter().filter(|r| r.run() == 1).cloned().collect();
    Ok(correctness::check(&first, &reference))
}

fn print_findings(run_dir: &Path, dir: &Path, findings: &[Finding]) {
    println!("check {} against {}", run_dir.display(), dir.display());
    println!("| target | scenario | prompt | metric | verdict | detail |");
    println!("|---|---|---|---|---|---|");
    for f in findings {
        println!(
            "| {} | {} | {} | {} | {:?} | {} |",
            f.target, f.scenario, f.prompt, f.metric, f.verdict, f.detail
        );
    }
}

/// Correctness in one line (and a table of what failed): what a run without baselines can
/// still be judged on.
fn print_correctness(run_dir: &Path, dir: &Path, findings: &[Finding]) {
    if findings.is_empty() {
        return;
    }
    let failed: Vec<Finding> = findings
        .iter()
        .filter(|f| f.verdict.fails())
        .cloned()
        .collect();
    let mut targets: Vec<&str> = findings.iter().map(|f| f.target.as_str()).collect();
    targets.sort();
    targets.dedup();
    println!(
        "correctness against the model's reference: {} of {} checks passed over {} targets (--table lists them)",
        findings.len() - failed.len(),
        findings.len(),
        targets.len()
    );
    if !failed.is_empty() {
        print_findings(run_dir, dir, &failed);
    }
}

/// `--accept`: the run's token snapshots and numbers become the baseline of its profile and model.
fn accept(
    flags: &Flags,
    run_dir: &Path,
    manifest: &RunManifest,
    results: &[TargetResult],
    dir: &Path,
) -> Result<()> {
    if manifest.status != results::RunStatus::Complete {
        bail!(
            "{}: run status is {:?}; only a complete run can become a baseline",
            run_dir.display(),
            manifest.status
        );
    }
    if manifest.provenance.git_dirty && !flags.allow_dirty {
        bail!(
            "{}: the run was made from a tree with uncommitted changes ({}); commit and re-run, or pass --allow-dirty",
            run_dir.display(),
            manifest.provenance.git_rev
        );
    }
    let measure = manifest.plan.as_ref().map(|p| p.measure.name());
    for path in baseline::accept(results, dir, measure)? {
        eprintln!("wrote {}", path.display());
    }
    // Accepting is allowed, but say which numbers will never compare cleanly.
    for (target, runs) in baseline::by_target(results) {
        for sc in &runs[0].stats {
            for p in &sc.prompts {
                for m in Metric::CHECKED {
                    let Some(o) = baseline::observe(&runs, &sc.id, &p.prompt, m) else {
                        continue;
                    };
                    if o.runs == 1
                        && o.samples >= baseline::MIN_NOISE_SAMPLES
                        && o.noise > flags.rules.max_cv
                    {
                        eprintln!(
                            "warning: {target} {} {} {m} varies by {:.1} % within the run (> {:.1} %): check calls a run this disturbed too noisy",
                            sc.id,
                            p.prompt,
                            o.noise * 100.0,
                            flags.rules.max_cv * 100.0
                        );
                    }
                }
            }
        }
    }
    eprintln!(
        "accepted {} as the baseline of profile `{}`, model `{}`",
        manifest.run_id, manifest.profile, manifest.settings.model.name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-check-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_verdicts_are_kept_beside_the_run_and_shown_in_its_reports() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: Flags,
        }
        use clap::Parser;
        let from = paths::root().join("results/cpu-load-native-llamacpp-20261129");
        let run = tempdir("record");
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), run.join(e.file_name())).unwrap();
            }
        }
        let arg = run.display().to_string();
        // Whatever the verdict on this machine's baselines, it is kept.
        let verdict = super::run(Cli::parse_from(["check", "--run", &arg]).flags);
        let rec: CheckRecord =
            results::read_json(&run.join(lab_results::check::CHECK_FILE)).unwrap();
        let text = std::fs::read_to_string(run.join(lab_results::check::CHECK_FILE)).unwrap();
        let root = paths::root().display().to_string();
        assert!(
            !text.contains(&root),
            "no path of this checkout in the record"
        );
        assert_eq!(verdict.is_ok(), rec.outcome.passed(), "{}", rec.outcome);
        assert!(!rec.findings.is_empty());
        let html = std::fs::read_to_string(run.join(report::HTML_FILE)).unwrap();
        assert!(
            html.contains(&report::html::esc(&rec.outcome.to_string())),
            "the page shows the outcome"
        );
        let md = std::fs::read_to_string(run.join("report.md")).unwrap();
        assert!(md.contains("## Check against baselines"));
        // --no-record leaves the run alone.
        std::fs::remove_file(run.join(lab_results::check::CHECK_FILE)).unwrap();
        let _ = super::run(Cli::parse_from(["check", "--run", &arg, "--no-record"]).flags);
        assert!(!run.join(lab_results::check::CHECK_FILE).exists());
    }

    #[test]
    fn the_latest_run_is_the_one_that_started_last_whatever_its_name() {
        let committed = paths::root().join("results/baseline-cpu-20261122/run.json");
        let mut m: RunManifest = results::read_json(&committed).unwrap();
        let dir = tempdir("latest");
        for (name, started) in [
            ("synthetic-z", "2026-11-22T10:00:00Z"),
            ("20261128T090000-abc", "2026-11-28T09:00:00Z"),
            ("cpu-a", "2026-11-25T00:00:00Z"),
        ] {
            m.provenance.started_at = started.into();
            std::fs::create_dir_all(dir.join(name)).unwrap();
            results::write_json_atomic(&dir.join(name).join("run.json"), &m).unwrap();
        }
        std::fs::create_dir_all(dir.join("zz-not-a-run")).unwrap();
        assert_eq!(latest_run(&dir).unwrap(), dir.join("20261128T090000-abc"));
        let empty = tempdir("latest-empty");
        assert!(latest_run(&empty)
            .unwrap_err()
            .to_string()
            .contains("run `cargo xtask bench` first"));
    }

    #[test]
    fn a_missing_profile_or_model_is_named_with_what_exists() {
        let root = tempdir("missing");
        std::fs::create_dir_all(root.join("cpu-a/smollm2-135m")).unwrap();
        std::fs::create_dir_all(root.join("reference")).unwrap();
        let p = missing_baseline(&root, "cpu-b", "smollm2-135m").unwrap();
        assert!(
            p.contains("no baseline for hardware profile `cpu-b`")
                && p.contains("profiles with baselines: cpu-a"),
            "{p}"
        );
        let m = missing_baseline(&root, "cpu-a", "synthetic-llama-3.2-1b").unwrap();
        assert!(
            m.contains("no baseline for model `synthetic-llama-3.2-1b`")
                && m.contains("models with baselines there: smollm2-135m"),
            "{m}"
        );
        assert_eq!(missing_baseline(&root, "cpu-a", "smollm2-135m"), None);
    }

    #[test]
    fn thresholds_parse_or_name_the_flag() {
        let options = |t: &[&str]| {
            Rules {
                tolerance: 0.05,
                thresholds: t.iter().map(|s| s.to_string()).collect(),
                max_cv: 0.05,
                max_threshold: 0.15,
                max_throttled: 0.05,
            }
            .options(false)
        };
        let o = options(&["decode_tok_per_s=0.2"]).unwrap();
        assert_eq!(o.threshold(Metric::DecodeTokPerS), 0.2);
        assert_eq!(o.threshold(Metric::TtftMs), 0.05);
        for bad in [
            "decode=0.2",
            "decode_tok_per_s",
            "ttft_ms=-1",
            "inter_token_ms=0.1",
        ] {
            let e = options(&[bad]).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("--threshold {bad}: expected METRIC=FRACTION")),
                "{e}"
            );
        }
    }
}
