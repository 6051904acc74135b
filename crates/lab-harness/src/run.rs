//! Executing a [`BenchPlan`]: one [`run_target`] per prepared target, in order, each outcome
//! handed to the one [`RunSink`] that owns the run directory. Whatever must be restored after a
//! run (a clock lock, a telemetry sampler) wraps the one call to [`bench`]; an interruption
//! returns through it like any other outcome, so such guards always drop.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use lab_protocol::ScenarioRequest;

use crate::correctness::{self, Reference};
use crate::plan::{build_request, scenario_requests, BenchPlan, PreparedTarget};
use crate::report;
use crate::results::{
    compute_stats, write_json_atomic, RunManifest, RunStatus, TargetOutcome, TargetResult,
    TargetStatus, RESULT_VERSION,
};
use crate::runner::{self, RunError};
use crate::{display_path, sha256_file, Error, Result};

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

/// Runs every target of `plan` in turn and writes `run.json`, one result file per target and
/// the reports into `plan.run_dir`. Each result is on disk as soon as its engine finishes; a
/// failing engine is recorded and the run goes on; Ctrl-C (`interrupted`) stops after killing
/// the current engine, and the run is recorded as interrupted.
pub fn bench(
    plan: &BenchPlan,
    interrupted: &AtomicBool,
) -> Result<(RunManifest, Vec<TargetResult>)> {
    let (requests, reference) = scenario_requests(plan)?;
    let mut sink = RunSink::create(plan, &requests)?;
    for (i, t) in plan.targets.iter().enumerate() {
        eprintln!(
            "== [{}/{}] {} ({}) ==",
            i + 1,
            plan.targets.len(),
            t.label(),
            t.runtime
        );
        match run_target(plan, t, &requests, reference.as_ref(), interrupted)? {
            TargetRun::Finished(outcome, result) => sink.record(outcome, result)?,
            TargetRun::Interrupted => {
                sink.record(
                    TargetOutcome {
                        target: t.label(),
                        status: TargetStatus::Failed,
                        error: Some(Interrupted.to_string()),
                        file: None,
                    },
                    None,
                )?;
                eprintln!(
                    "interrupted: results of finished engines are in {}",
                    plan.run_dir.display()
                );
                return sink.finish(RunStatus::Interrupted);
            }
        }
    }
    sink.finish(RunStatus::Complete)
}

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
    plan: &BenchPlan,
    t: &PreparedTarget,
    requests: &[ScenarioRequest],
    reference: Option<&Reference>,
    interrupted: &AtomicBool,
) -> Result<TargetRun> {
    let label = t.label();
    let request = build_request(plan, t, requests);
    let binary_sha = sha256_file(&t.binary)?;
    let outcome = runner::run_engine(
        &t.launch,
        &request,
        &label,
        plan.spec.timeout(),
        interrupted,
    );
    let (report, wall_ms, error) = match outcome {
        Ok(f) => (Some(f.report), f.wall.as_secs_f64() * 1e3, None),
        Err(RunError::Failed {
            report,
            message,
            status,
        }) => (
            report.map(|r| *r),
            0.0,
            Some(format!("{label}: engine exited with {status}: {message}")),
        ),
        Err(RunError::Interrupted) => return Ok(TargetRun::Interrupted),
        Err(e) => (None, 0.0, Some(format!("{label}: {e}"))),
    };
    if let Some(e) = &error {
        eprintln!("error: {e}");
    }
    let Some(report) = report else {
        let outcome = TargetOutcome {
            target: label,
            status: TargetStatus::Failed,
            error,
            file: None,
        };
        return Ok(TargetRun::Finished(outcome, None));
    };
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
    let mut result = TargetResult {
        result_version: RESULT_VERSION,
        run_id: plan.run_id().to_string(),
        target: label.clone(),
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
        report,
    };
    if let Some(r) = reference {
        result.correctness = correctness::evaluate(&result, r);
        if let Some(c) = &result.correctness {
            eprintln!(
                "{label}: teacher-forced top-1 agreement {}/{} ({:.1} %, gate {:.0} %), greedy prefix {}/{} tokens",
                c.top1_agree,
                c.positions,
                c.top1_agreement * 100.0,
                c.gate * 100.0,
                c.greedy_prefix_tokens,
                c.greedy_tokens
            );
        }
    }
    let outcome = TargetOutcome {
        target: label,
        status,
        error,
        file: Some(format!("{}.json", t.file_stem())),
    };
    Ok(TargetRun::Finished(outcome, Some(Box::new(result))))
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

    /// Records one target: its result file (when there is one), then `run.json`.
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

    /// Ends the run: its final status in `run.json`, then every report.
    pub fn finish(mut self, status: RunStatus) -> Result<(RunManifest, Vec<TargetResult>)> {
        self.manifest.status = status;
        self.write_manifest()?;
        report::write_all(&self.dir, &self.manifest, &self.results)?;
        Ok((self.manifest, self.results))
    }

    fn write_manifest(&self) -> Result<()> {
        write_json_atomic(&self.dir.join("run.json"), &self.manifest)
    }
}
