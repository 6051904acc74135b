//! `cargo xtask reproduce results/<id>`: re-run exactly what a recorded run ran (its `plan`),
//! after saying how this environment differs from the recorded one, then judge every number
//! against the recorded one with `check`'s rules (a verdict per metric).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use lab_harness::{provenance, BenchPlan};
use lab_results::baseline::{self, CheckOptions, EarlierRun, Verdict};
use lab_results::results::{self, RunManifest, TargetResult};

use crate::{bench, paths};

#[derive(clap::Args)]
pub struct Flags {
    /// The run to reproduce (`results/<id>`).
    pub run: PathBuf,
    /// Use the engine binaries already built (skip `cargo build`).
    #[arg(long)]
    pub no_build: bool,
    /// Where the new run directory goes [default: results/].
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Name of the new run [default: <recorded id>-repro-<UTC time>].
    #[arg(long)]
    pub run_id: Option<String>,
    /// How numbers are judged: as `check` judges them against a baseline.
    #[command(flatten)]
    pub rules: crate::check::Rules,
}

pub fn run(flags: Flags) -> Result<()> {
    let opts = flags.rules.options(false)?;
    let (old, old_results) = results::load_run(&flags.run)?;
    let Some(mut spec) = old.plan.clone() else {
        bail!(
            "{}: recorded before runs kept their plan (run.json has no `plan`), so it cannot be repeated exactly; re-run its settings with `cargo xtask bench` (see its report.md) instead",
            flags.run.display()
        );
    };
    let root = paths::root();
    let prov = provenance::collect(
        &root,
        lab_results::provenance::rfc3339(lab_results::provenance::now_unix()),
    );
    spec.run_id = flags.run_id.clone().unwrap_or_else(|| {
        format!(
            "{}-repro-{}",
            old.run_id,
            prov.started_at
                .replace(['-', ':'], "")
                .trim_end_matches('Z')
        )
    });
    let results_dir = flags
        .results_dir
        .clone()
        .unwrap_or_else(|| root.join("results"));
    eprintln!(
        "reproducing {} ({} targets, profile `{}`, {} run(s) of the plan)",
        old.run_id,
        spec.targets.len(),
        spec.measure,
        spec.repeat
    );
    // The recorded run's clock lock and telemetry, set up as `bench` does.
    let gpu = crate::gpu::GpuSetup::new(
        &spec,
        false,
        false,
        lab_gpu::open,
        lab_gpu::lock::default_state_path(),
    )?;
    let lock = gpu.lock()?;
    let mut prov = prov;
    gpu.record(&mut prov, lock.as_ref());
    let plan = bench::prepare(spec, prov, &results_dir, !flags.no_build)?;
    let differences = environment(&old, &old_results, &plan);
    let (new, new_results) = bench::execute(&plan, gpu.sampling().as_ref())?;
    if let Some(lock) = lock {
        lock.release()?;
    }
    print_environment(&differences);
    judge(&flags.run, &old_results, &new, &new_results, &opts)
}

/// One environment field: recorded, now, and whether they differ.
struct Field {
    name: String,
    recorded: String,
    now: String,
}

/// The environment fields of the recorded run and of this machine, before running: hardware
/// profile, CPU, OS, rustc, git revision, model weights, and the engine binaries (compared only
/// when the git revision is the same: another revision builds other binaries).
fn environment(old: &RunManifest, old_results: &[TargetResult], plan: &BenchPlan) -> Vec<Field> {
    let p = &plan.provenance;
    let o = &old.provenance;
    let f = |name: &str, recorded: String, now: String| Field {
        name: name.into(),
        recorded,
        now,
    };
    let dirty = |rev: &str, d: bool| format!("{rev}{}", if d { " (dirty)" } else { "" });
    let mut fields = vec![
        f(
            "hardware profile",
            old.profile.clone(),
            plan.profile.clone(),
        ),
        f("CPU", o.host.cpu_model.clone(), p.host.cpu_model.clone()),
        f(
            "logical CPUs",
            o.host.logical_cpus.to_string(),
            p.host.logical_cpus.to_string(),
        ),
        f("OS", o.host.os.clone(), p.host.os.clone()),
        f("kernel", o.host.kernel.clone(), p.host.kernel.clone()),
        f("rustc", o.rustc.clone(), p.rustc.clone()),
        f(
            "git revision",
            dirty(&o.git_rev, o.git_dirty),
            dirty(&p.git_rev, p.git_dirty),
        ),
        f(
            "model sha256",
            digest_list(&old.settings.model.sha256),
            digest_list(&plan.model_info().sha256),
        ),
    ];
    let same_rev = o.git_rev == p.git_rev && !o.git_dirty && !p.git_dirty;
    for r in old_results.iter().filter(|r| r.run() == 1) {
        let Some(t) = plan.targets.iter().find(|t| t.label() == r.target) else {
            fields.push(f(
                &format!("{} binary", r.target),
                r.engine_binary_sha256.clone(),
                "not in this plan".into(),
            ));
            continue;
        };
        let now = lab_harness::sha256_file(&t.binary).unwrap_or_else(|e| e.to_string());
        if same_rev {
            fields.push(f(
                &format!("{} binary sha256", r.target),
                r.engine_binary_sha256.clone(),
                now,
            ));
        }
        if r.image_digest.is_some() || t.image_digest.is_some() {
            fields.push(f(
                &format!("{} image", r.target),
                r.image_digest.clone().unwrap_or("none".into()),
                t.image_digest.clone().unwrap_or("none".into()),
            ));
        }
    }
    fields
}

fn digest_list(m: &std::collections::BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.get(..12).unwrap_or(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_environment(fields: &[Field]) {
    println!("\n## Environment: recorded vs now\n");
    println!("| field | recorded | now | |");
    println!("|---|---|---|---|");
    for f in fields {
        let same = if f.recorded == f.now {
            "same"
        } else {
            "**differs**"
        };
        println!("| {} | {} | {} | {same} |", f.name, f.recorded, f.now);
    }
}

/// Every number of the new run against the recorded one; non-zero exit unless all reproduced.
fn judge(
    old_dir: &Path,
    old_results: &[TargetResult],
    new: &RunManifest,
    new_results: &[TargetResult],
    opts: &CheckOptions,
) -> Result<()> {
    let expected = EarlierRun::of(old_results);
    // The machine's evidence (the gate study beside its baselines), when the profile has it.
    let mut opts = opts.clone();
    if opts.spread.is_none() {
        opts.spread = baseline::read_spread(&baseline::dir_for(
            &crate::paths::root().join("baselines"),
            &new.profile,
            &new.settings.model.name,
        ))?;
    }
    let opts = &opts;
    let findings = baseline::compare(new_results, &expected, opts)?;
    // The engines themselves: library versions as the engines reported them.
    let mut versions = Vec::new();
    for r in new_results.iter().filter(|r| r.run() == 1) {
        if let Some(o) = old_results
            .iter()
            .find(|o| o.target == r.target && o.run() == 1)
        {
            let (a, b) = (&o.report.engine, &r.report.engine);
            if (a.version.as_str(), a.backend.as_str()) != (b.version.as_str(), b.backend.as_str())
            {
                versions.push(format!(
                    "{}: {} {} → {} {}",
                    r.target, a.version, a.backend, b.version, b.backend
                ));
            }
        }
    }
    println!("\n## Verdicts: {} vs {}\n", new.run_id, old_dir.display());
    if versions.is_empty() {
        println!("engine versions: same as recorded\n");
    } else {
        println!("engine versions differ: {}\n", versions.join("; "));
    }
    println!("| target | scenario | prompt | metric | verdict |");
    println!("|---|---|---|---|---|");
    let mut not = 0;
    let mut unjudged = 0;
    for f in &findings {
        let verdict = match f.verdict {
            Verdict::Pass | Verdict::WithinNoise => {
                match lab_results::metric::Metric::from_name(&f.metric) {
                    Some(_) => format!("reproduced: {}", f.detail),
                    None => format!("reproduced exactly: {}", f.detail),
                }
            }
            Verdict::CannotJudge | Verdict::TooNoisy => {
                unjudged += 1;
                format!("{}: {}", f.verdict.label(), f.detail)
            }
            _ => {
                not += 1;
                format!("NOT reproduced ({:?}): {}", f.verdict, f.detail)
            }
        };
        println!(
            "| {} | {} | {} | {} | {verdict} |",
            f.target, f.scenario, f.prompt, f.metric
        );
    }
    if not > 0 {
        bail!(
            "{not} of {} comparisons not reproduced (new run: results/{})",
            findings.len(),
            new.run_id
        );
    }
    if unjudged > 0 {
        println!(
            "\nreproduced: every judged comparison ({} of {}); {unjudged} could not be judged on this machine (see each line)",
            findings.len() - unjudged,
            findings.len()
        );
    } else {
        println!(
            "\nreproduced: all {} comparisons (token ids and numbers)",
            findings.len()
        );
    }
    Ok(())
}
