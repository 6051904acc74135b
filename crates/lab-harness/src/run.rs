//! Executing a [`BenchPlan`]: one [`run_target`] per prepared target, in order, each outcome
//! handed to the one [`RunSink`] that owns the run directory. Whatever must be restored after a
//! run (a clock lock, a telemetry sampler) wraps the one call to [`bench`]; an interruption
//! returns through it like any other outcome, so such guards always drop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use lab_protocol::ScenarioRequest;

use crate::plan::{build_request, scenario_requests, BenchPlan, PreparedTarget};
use crate::progress::Progress;
use lab_results::correctness::{self, Reference};

use crate::runner::{self, RunError};
use crate::telemetry::GpuSampling;
use crate::{display_path, sha256_file, Error, Result};
use lab_results::results::{
    compute_stats, write_json_atomic, RunManifest, RunStatus, TargetOutcome, TargetResult,
    TargetStatus, RESULT_VERSION,
};

/// Returned by the xtask when Ctrl-C stopped a run (after the run directory was made consistent
/// and every guard was dropped); the process exits with status 130.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted (Ctrl-C)")
    }
}

impl std::error::Error for Interrupted {}

/// Runs every target of `plan` in turn, `plan.spec.repeat` times (every target once per run,
/// so drift hits all engines alike), and writes `run.json`, one result file per target and run
/// and the reports into `plan.run_dir`. Each result is on disk as soon as its engine finishes; a
/// failing engine is recorded and the run goes on; Ctrl-C (`interrupted`) stops after killing
/// the current engine, and the run is recorded as interrupted.
pub fn bench(
    plan: &BenchPlan,
    interrupted: &AtomicBool,
) -> Result<(RunManifest, Vec<TargetResult>)> {
    bench_with(plan, interrupted, None)
}

/// [`bench`], sampling GPU telemetry around every engine process when `sampling` is given.
pub fn bench_with(
    plan: &BenchPlan,
    interrupted: &AtomicBool,
    sampling: Option<&GpuSampling>,
) -> Result<(RunManifest, Vec<TargetResult>)> {
    let (requests, reference) = scenario_requests(plan)?;
    // Correctness is checked once: later runs repeat only the timed scenarios.
    let timed: Vec<ScenarioRequest> = requests
        .iter()
        .filter(|r| !lab_results::scenario::is_correctness_scenario(&r.id))
        .cloned()
        .collect();
    let mut sink = RunSink::create(plan, &requests)?;
    let repeat = plan.spec.repeat.max(1);
    let progress =
        Progress::new(plan.targets.len() * repeat as usize).expecting(earlier_times(plan));
    announce(plan, &requests, &progress);
    for run in 1..=repeat {
        if run > 1 && !cool_down(plan, interrupted, &progress) {
            progress.finish();
            return sink.interrupted(plan, None, &not_started(plan, run, 0));
        }
        let requests = if run == 1 { &requests } else { &timed };
        for (i, t) in plan.targets.iter().enumerate() {
            let of = if repeat > 1 {
                format!(", run {run}/{repeat}")
            } else {
                String::new()
            };
            progress.start(&format!("{} ({}{of})", t.label(), t.runtime));
            let ctx = TargetContext {
                plan,
                requests,
                reference: reference.as_ref(),
                run,
                progress: &progress,
                sampling,
            };
            let probe = |b: &std::path::Path| crate::probe::probe(b, plan.spec.threads);
            let before = plan.probe.as_deref().map(probe).unwrap_or_default();
            let ticks_before = crate::probe::cpu_ticks();
            let finished = run_target(&ctx, t, interrupted)?;
            let ticks_after = crate::probe::cpu_ticks();
            let after = plan
                .probe
                .as_deref()
                .filter(|_| matches!(finished, TargetRun::Finished(..)))
                .map(probe)
                .unwrap_or_default();
            match finished {
                TargetRun::Finished(outcome, mut result) => {
                    if let Some(r) = result.as_deref_mut().filter(|_| plan.probe.is_some()) {
                        let steal = crate::probe::steal_share(ticks_before, ticks_after);
                        r.probe = Some(lab_results::provenance::Probe {
                            read_bandwidth_before_gb_per_s: before.read_bandwidth_gb_per_s,
                            read_bandwidth_after_gb_per_s: after.read_bandwidth_gb_per_s,
                            gemm_before_gflop_per_s: before.gemm_gflop_per_s,
                            gemm_after_gflop_per_s: after.gemm_gflop_per_s,
                            cpu_steal_share: steal,
                        });
                        if let Some(note) = lab_results::gate::disturbed_note(steal, "this run's") {
                            progress.println(&format!("{}: {note}", t.label()));
                        }
                    }
                    let current = (outcome.target.clone(), outcome.repetition);
                    if let Err(e) = sink.record(outcome, result) {
                        progress.finish();
                        return Err(sink.lost(e, current, &not_started(plan, run, i + 1)));
                    }
                }
                TargetRun::Interrupted => {
                    progress.finish();
                    return sink.interrupted(
                        plan,
                        Some((t.label(), run)),
                        &not_started(plan, run, i + 1),
                    );
                }
            }
            progress.finish_one();
        }
    }
    progress.finish();
    // Ctrl-C from here on lets the reports be written (milliseconds); the xtask exits 130.
    pause_at("write", interrupted);
    sink.finish(RunStatus::Complete)
}

/// Each engine run's process time in the latest complete run of the same plan on this machine
/// (same hardware profile, model, measurement profile, targets, scenarios, runtimes, repeats and
/// slowdown) under the run's results directory, and that run's directory name; `None` when
/// there is none.
fn earlier_times(plan: &BenchPlan) -> Option<(Vec<Option<std::time::Duration>>, String)> {
    let parent = plan.run_dir.parent()?;
    let measure = plan.spec.measure.name();
    let mut best: Option<(String, std::path::PathBuf)> = None;
    for e in std::fs::read_dir(parent).ok()?.flatten() {
        let dir = e.path();
        if dir == plan.run_dir {
            continue;
        }
        let Ok(m) = lab_results::results::read_json::<RunManifest>(&dir.join("run.json")) else {
            continue;
        };
        let same = m.status == RunStatus::Complete
            && m.profile == plan.profile
            && m.settings.model.name == plan.model.name
            && m.plan.as_ref().is_some_and(|p| {
                p.measure.name() == measure
                    && p.targets == plan.spec.targets
                    && p.scenarios == plan.spec.scenarios
                    && p.runtimes == plan.spec.runtimes
                    && p.repeat == plan.spec.repeat
                    && p.slowdown == plan.spec.slowdown
            });
        if same
            && best
                .as_ref()
                .is_none_or(|(t, _)| *t < m.provenance.started_at)
        {
            best = Some((m.provenance.started_at.clone(), dir));
        }
    }
    let (_, dir) = best?;
    let (_, results) = lab_results::results::load_run(&dir).ok()?;
    let mut times = Vec::new();
    for run in 1..=plan.spec.repeat.max(1) {
        for t in &plan.targets {
            let label = t.label();
            times.push(
                results
                    .iter()
                    .find(|r| r.target == label && r.run() == run)
                    .map(|r| std::time::Duration::from_secs_f64(r.process_wall_ms / 1e3)),
            );
        }
    }
    Some((
        times,
        format!(
            "{} (same machine profile and plan)",
            dir.file_name()?.to_string_lossy()
        ),
    ))
}

/// A fault-injection hook for tests: with `LAB_FAULT_PAUSE_AT=<phase>` (`volume`, `build`,
/// `write`) a run stops at the start of that phase, says so on stderr, and waits — at most 60 s —
/// for Ctrl-C, so that a test can interrupt each phase at a known point. Without the variable it
/// does nothing.
pub fn pause_at(phase: &str, interrupted: &AtomicBool) {
    if std::env::var("LAB_FAULT_PAUSE_AT").as_deref() != Ok(phase) {
        return;
    }
    eprintln!("paused at {phase} (LAB_FAULT_PAUSE_AT): waiting for Ctrl-C");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !interrupted.load(Ordering::SeqCst) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The targets a run ending at target `next` of run `run` did not start: the rest of this run
/// of the plan and every later one.
fn not_started(plan: &BenchPlan, run: u32, next: usize) -> Vec<TargetOutcome> {
    let repeat = plan.spec.repeat.max(1);
    (run..=repeat)
        .flat_map(|r| {
            let from = if r == run { next } else { 0 };
            plan.targets[from.min(plan.targets.len())..]
                .iter()
                .map(move |t| TargetOutcome {
                    target: t.label(),
                    status: TargetStatus::NotStarted,
                    error: None,
                    file: None,
                    repetition: (r > 1).then_some(r),
                })
        })
        .collect()
}

/// Says what the run will measure, and the most its timed iterations can take under a budget.
fn announce(plan: &BenchPlan, requests: &[ScenarioRequest], progress: &Progress) {
    let s = &plan.spec;
    let mut line = format!(
        "measuring: profile `{}`: {} warm-up + {} iterations per prompt",
        s.measure, s.warmup_iterations, s.iterations
    );
    if s.min_duration_ms > 0 {
        line += &format!(" and at least {:.0} s", s.min_duration_ms as f64 / 1e3);
    }
    if let Some(max) = s.max_duration_ms {
        // Load scenarios are timed per level, not per prompt (announced below).
        let prompts: usize = requests
            .iter()
            .filter(|r| !lab_results::scenario::is_correctness_scenario(&r.id) && r.load.is_none())
            .map(|r| r.prompts.len())
            .sum();
        let bound = std::time::Duration::from_millis(
            max * prompts as u64 * plan.targets.len() as u64 * u64::from(s.repeat.max(1)),
        );
        line += &format!(
            " within {:.0} s; timed iterations take at most {} in all (plus loading, warm-ups and correctness)",
            max as f64 / 1e3,
            crate::progress::fmt_duration(bound)
        );
    }
    for r in requests {
        match &r.load {
            Some(lab_protocol::Load::Batches {
                batch_sizes,
                duration_ms,
            }) => {
                line += &format!(
                    "; {}: batch sizes {batch_sizes:?}, {:.0} s each (at least one batch)",
                    r.id,
                    *duration_ms as f64 / 1e3
                )
            }
            Some(lab_protocol::Load::Concurrent {
                concurrency,
                requests,
                ..
            }) => {
                line += &format!(
                "; {}: concurrency {concurrency:?}, {requests} requests each (at least the level)",
                r.id
            )
            }
            None => {}
        }
        if let Some(l) = &r.lora {
            line += &format!(
                "; {}: {} positions, {} warm-up + {} measured training steps",
                r.id,
                l.token_ids.len().saturating_sub(1),
                r.warmup_iterations,
                r.iterations
            );
        }
        if let Some(m) = &r.micro {
            line += &format!(
                "; {}: {} cases, {} warm-up + up to {} timed calls each{}",
                r.id,
                m.cases.len(),
                r.warmup_iterations,
                r.iterations,
                r.max_duration_ms
                    .map(|ms| format!(" within {:.1} s", ms as f64 / 1e3))
                    .unwrap_or_default()
            );
        }
    }
    if s.repeat > 1 {
        line += &format!(
            "; the plan runs {} times, targets interleaved{}",
            s.repeat,
            if s.cooldown_s > 0 {
                format!(", {} s cool-down between runs", s.cooldown_s)
            } else {
                String::new()
            }
        );
    }
    progress.println(&line);
}

/// Idles `plan.spec.cooldown_s` between two runs; false when Ctrl-C came meanwhile.
fn cool_down(plan: &BenchPlan, interrupted: &AtomicBool, progress: &Progress) -> bool {
    if plan.spec.cooldown_s > 0 {
        progress.println(&format!("cool-down: {} s", plan.spec.cooldown_s));
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(plan.spec.cooldown_s);
    while std::time::Instant::now() < until {
        if interrupted.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    !interrupted.load(Ordering::SeqCst)
}

/// What [`run_target`] needs besides the target: the plan, the requests of this run, the
/// reference, which run of the plan this is, and where progress goes.
pub struct TargetContext<'a> {
    pub plan: &'a BenchPlan,
    pub requests: &'a [ScenarioRequest],
    pub reference: Option<&'a Reference>,
    /// 1 for the first run of the plan, 2.. for `--repeat`.
    pub run: u32,
    pub progress: &'a Progress,
    /// GPU telemetry to sample around the engine process.
    pub sampling: Option<&'a GpuSampling<'a>>,
}

/// What the engine process left: its report, wall ms, error and raw GPU telemetry.
type EngineRun = (
    Option<lab_protocol::Report>,
    f64,
    Option<String>,
    Option<lab_gpu::sampler::Telemetry>,
);

/// What one target's run came to.
pub enum TargetRun {
    /// The engine ran (successfully or not); the result exists when it wrote a report.
    Finished(TargetOutcome, Option<Box<TargetResult>>),
    /// Ctrl-C: the engine was killed; nothing of it is kept.
    Interrupted,
}

/// Runs one target: its engine process with the plan's request, then statistics, correctness
/// against the reference and the status. Writes nothing.
pub fn run_target(
    ctx: &TargetContext,
    t: &PreparedTarget,
    interrupted: &AtomicBool,
) -> Result<TargetRun> {
    let plan = ctx.plan;
    let label = t.label();
    let request = build_request(plan, t, ctx.requests);
    let binary_sha = match &t.binary_sha256 {
        Some(s) => s.clone(),
        None => sha256_file(&t.binary)?,
    };
    let Some((report, wall_ms, error, raw)) = run_engine(ctx, t, &request, &label, interrupted)
    else {
        return Ok(TargetRun::Interrupted);
    };
    if let Some(e) = &error {
        ctx.progress.println(&format!("error: {e}"));
    }
    let repetition = (ctx.run > 1).then_some(ctx.run);
    let Some(report) = report else {
        let outcome = TargetOutcome {
            target: label,
            status: TargetStatus::Failed,
            error,
            file: None,
            repetition,
        };
        return Ok(TargetRun::Finished(outcome, None));
    };
    let (status, error) = status_of(error, &report);
    let mut result = TargetResult {
        result_version: RESULT_VERSION,
        run_id: plan.run_id().to_string(),
        target: label.clone(),
        repetition,
        profile: plan.profile.clone(),
        model: plan.model_info(),
        engine_binary: display_path(&plan.root, &t.binary),
        engine_binary_sha256: binary_sha,
        image_digest: t.image_digest.clone(),
        runtime: Some(t.runtime.clone()),
        process_wall_ms: wall_ms,
        provenance: plan.provenance.clone(),
        stats: compute_stats(&report),
        correctness: None,
        telemetry: None,
        footprint: Some(crate::footprint::of(t)),
        startup: None,
        limits: Some(t.launch.limits.clone()),
        probe: None,
        report,
    };
    if let Some(raw) = raw {
        result.telemetry = Some(telemetry(&result, raw, &label, ctx.progress));
    }
    if let (Some(s), 1, false) = (&plan.spec.startup, ctx.run, status == TargetStatus::Failed) {
        result.startup = Some(crate::startup::measure(
            plan,
            t,
            s,
            interrupted,
            ctx.progress,
        )?);
    }
    if let Some(r) = ctx.reference.filter(|_| ctx.run == 1) {
        result.correctness = correctness::evaluate(&result, r);
        if let Some(c) = &result.correctness {
            ctx.progress.println(&correctness_line(&label, c));
        }
    }
    let outcome = TargetOutcome {
        target: label,
        status,
        error,
        file: Some(result_file(&t.file_stem(), ctx.run)),
        repetition,
    };
    Ok(TargetRun::Finished(outcome, Some(Box::new(result))))
}

/// The engine process of one target (sampled for GPU telemetry when asked): its report if it
/// wrote one, its wall time in ms, what went wrong, the raw telemetry; `None` on Ctrl-C.
fn run_engine(
    ctx: &TargetContext,
    t: &PreparedTarget,
    request: &lab_protocol::Request,
    label: &str,
    interrupted: &AtomicBool,
) -> Option<EngineRun> {
    let run = || {
        runner::run_engine_with(
            &t.launch,
            request,
            label,
            ctx.plan.spec.timeout(),
            interrupted,
            ctx.progress,
        )
    };
    let (outcome, raw) = match ctx.sampling {
        Some(s) => {
            let (o, raw) = lab_gpu::sampler::record(s.gpu, &s.devices, s.period, run);
            (o, Some(raw))
        }
        None => (run(), None),
    };
    let (report, wall_ms, error) = match outcome {
        Ok(f) => {
            let problems = lab_results::consistency::problems(request, &f.report);
            let error = problems.first().map(|first| {
                format!(
                    "{label}: the report does not match the request ({} problem(s)): {first}",
                    problems.len()
                )
            });
            (Some(f.report), f.wall.as_secs_f64() * 1e3, error)
        }
        Err(RunError::Failed {
            report,
            message,
            status,
        }) => (
            report.map(|r| *r),
            0.0,
            Some(format!("{label}: engine exited with {status}: {message}")),
        ),
        Err(RunError::Interrupted) => return None,
        Err(e) => (None, 0.0, Some(format!("{label}: {e}"))),
    };
    Some((report, wall_ms, error, raw))
}

/// A target's status and its first error: failed when the harness or the engine said so,
/// partial when a scenario failed.
fn status_of(
    error: Option<String>,
    report: &lab_protocol::Report,
) -> (TargetStatus, Option<String>) {
    let partial = report.scenarios.iter().any(|s| s.error.is_some());
    let status = match (&error, report.error.is_some(), partial) {
        (Some(_), _, _) | (_, true, _) => TargetStatus::Failed,
        (None, false, true) => TargetStatus::Partial,
        _ => TargetStatus::Ok,
    };
    let error = error.or_else(|| report.error.clone()).or_else(|| {
        report
            .scenarios
            .iter()
            .find_map(|s| s.error.as_ref().map(|e| format!("scenario {}: {e}", s.id)))
    });
    (status, error)
}

/// The GPU telemetry of a result, with a warning when a GPU was throttled.
fn telemetry(
    result: &TargetResult,
    raw: lab_gpu::sampler::Telemetry,
    label: &str,
    progress: &Progress,
) -> lab_results::telemetry::TargetTelemetry {
    let t = lab_results::telemetry::summarize(&result.report, raw);
    if let Some(w) = t.worst_throttled() {
        progress.println(&format!(
            "warning: {label}: GPU {} was throttled ({}) in {}/{} measured windows of {}",
            w.device,
            w.slowdowns.join(", "),
            w.throttled_windows,
            w.windows,
            w.scenario
        ));
    }
    t
}

/// The progress line of a target's agreement with the reference.
fn correctness_line(label: &str, c: &lab_results::results::Correctness) -> String {
    format!(
        "{label}: teacher-forced top-1 agreement {}/{} ({:.1} %, gate {:.0} %), greedy prefix {}/{} tokens",
        c.top1_agree,
        c.positions,
        c.top1_agreement * 100.0,
        c.gate * 100.0,
        c.greedy_prefix_tokens,
        c.greedy_tokens
    )
}

/// A target's result file in the run directory: `<stem>.json` for the first run of the plan,
/// `<stem>.run<k>.json` for the k-th.
pub fn result_file(stem: &str, run: u32) -> String {
    if run > 1 {
        format!("{stem}.run{run}.json")
    } else {
        format!("{stem}.json")
    }
}

/// The one writer of a run directory. `run.json` is written when the run starts (`running`, with
/// the skipped targets), again after each target (its result file first, so `run.json` never
/// names a file that is not there), and at the end with the reports. Every write is atomic.
pub struct RunSink {
    dir: PathBuf,
    manifest: RunManifest,
    results: Vec<TargetResult>,
}

impl RunSink {
    /// Creates the run directory and writes the initial `run.json`.
    pub fn create(plan: &BenchPlan, requests: &[ScenarioRequest]) -> Result<RunSink> {
        std::fs::create_dir_all(&plan.run_dir).map_err(|e| Error::io(&plan.run_dir, e))?;
        let manifest = RunManifest {
            result_version: RESULT_VERSION,
            run_id: plan.run_id().to_string(),
            status: RunStatus::Running,
            profile: plan.profile.clone(),
            settings: plan.settings(requests),
            provenance: plan.provenance.clone(),
            targets: plan
                .skipped
                .iter()
                .map(|(t, why)| TargetOutcome {
                    target: t.clone(),
                    status: TargetStatus::Skipped,
                    error: Some(why.clone()),
                    file: None,
                    repetition: None,
                })
                .collect(),
            plan: Some(plan.spec.clone()),
        };
        let sink = RunSink {
            dir: plan.run_dir.clone(),
            manifest,
            results: Vec::new(),
        };
        sink.write_manifest()?;
        Ok(sink)
    }

    /// Records one target: its result file (when there is one), then `run.json`. When either
    /// cannot be written (a full disk, a directory made read-only), the error says so; what was
    /// written before stays as it was (every write is atomic, and `run.json` is rewritten only
    /// after the file it names is on disk).
    pub fn record(
        &mut self,
        outcome: TargetOutcome,
        result: Option<Box<TargetResult>>,
    ) -> Result<()> {
        if let (Some(r), Some(file)) = (&result, &outcome.file) {
            write_json_atomic(&self.dir.join(file), r)?;
        }
        self.manifest.targets.push(outcome);
        self.results.extend(result.map(|r| *r));
        self.write_manifest()
    }

    /// A write failed: the run stops (nothing more could be kept). One error line says which
    /// file could not be written and why, and what the run directory still holds; `run.json`
    /// is brought up to date (the targets not started) if the disk still takes it.
    fn lost(mut self, e: Error, current: (String, Option<u32>), rest: &[TargetOutcome]) -> Error {
        // The outcome whose result could not be written may be in the manifest already (when
        // `run.json` was the file that failed): it is recorded again, failed, without a file.
        self.manifest
            .targets
            .retain(|t| (&t.target, t.repetition) != (&current.0, current.1));
        self.manifest.targets.push(TargetOutcome {
            target: current.0,
            status: TargetStatus::Failed,
            error: Some(format!(
                "measured, but its result could not be written: {e}"
            )),
            file: None,
            repetition: current.1,
        });
        let kept = self
            .manifest
            .targets
            .iter()
            .filter(|t| t.file.is_some())
            .count();
        self.manifest.targets.extend(rest.iter().cloned());
        self.manifest.status = RunStatus::Interrupted;
        let _ = self.write_manifest();
        Error::msg(format!(
            "{e}; the run stops here: {} holds the {kept} result file(s) written before, each complete, and run.json names only those",
            self.dir.display(),
        ))
    }

    /// Ctrl-C: the target being run (and its run of the plan) is recorded as failed, the
    /// targets after it as not started, the run as interrupted.
    fn interrupted(
        mut self,
        plan: &BenchPlan,
        current: Option<(String, u32)>,
        rest: &[TargetOutcome],
    ) -> Result<(RunManifest, Vec<TargetResult>)> {
        if let Some((target, run)) = current {
            self.manifest.targets.push(TargetOutcome {
                target,
                status: TargetStatus::Failed,
                error: Some(Interrupted.to_string()),
                file: None,
                repetition: (run > 1).then_some(run),
            });
        }
        self.manifest.targets.extend(rest.iter().cloned());
        eprintln!(
            "interrupted: results of finished engines are in {}",
            plan.run_dir.display()
        );
        self.finish(RunStatus::Interrupted)
    }

    /// Ends the run: its final status in `run.json`, then every report.
    pub fn finish(mut self, status: RunStatus) -> Result<(RunManifest, Vec<TargetResult>)> {
        self.manifest.status = status;
        self.write_manifest()?;
        lab_report::write_run(&self.dir, &self.manifest, &self.results)?;
        Ok((self.manifest, self.results))
    }

    fn write_manifest(&self) -> Result<()> {
        write_json_atomic(&self.dir.join("run.json"), &self.manifest)
    }
}
