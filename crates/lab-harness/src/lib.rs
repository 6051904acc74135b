//! The harness: orchestration, statistics, provenance, results and baselines.
//!
//! The xtask is a thin CLI over this library. The harness never links an engine: engines are
//! processes that speak `lab-protocol` JSON ([`runner`]). Statistics do no IO ([`stats`]);
//! results and reports are written by [`results`]; baselines are compared by [`baseline`].

pub mod baseline;
pub mod catalog;
pub mod container;
pub mod correctness;
pub mod launch;
pub mod model;
pub mod provenance;
pub mod results;
pub mod runner;
pub mod stats;
pub mod testkit;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use lab_protocol::{
    Device, GenerationSettings, Request, Sampling, ScenarioRequest, SCHEMA_VERSION,
};

use crate::catalog::{PromptSource, Scenario, Target};
use crate::model::ResolvedModel;
use crate::results::{
    compute_stats, write_json_atomic, RunManifest, RunSettings, RunStatus, TargetOutcome,
    TargetResult, TargetStatus, RESULT_VERSION,
};
use crate::runner::{Launch, RunError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}")]
    Msg(String),
}

impl Error {
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            err,
        }
    }
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Msg(m.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `path` relative to `root` when it lies inside it (results never carry this machine's layout),
/// else as given.
pub fn display_path(root: &Path, path: &Path) -> String {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let abs = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    abs.strip_prefix(&root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

/// A target ready to run: how to start it and what its binary is.
#[derive(Debug, Clone)]
pub struct PreparedTarget {
    pub target: Target,
    pub launch: Launch,
    /// The engine binary on the host (hashed for provenance).
    pub binary: PathBuf,
    /// The model directory as the engine sees it (differs from the host path in a container).
    pub model_dir_for_engine: String,
    /// The image ID (`sha256:…` of its configuration) when the engine runs in a container.
    pub image_digest: Option<String>,
    /// How this target runs: `native`, `podman`, `docker`, or `native (fallback: why)`.
    pub runtime: String,
    /// Appended to the label and file name when one run compares runtimes (`@podman`), else
    /// empty.
    pub label_suffix: String,
}

impl PreparedTarget {
    /// `candle:gguf-q4_1`, or `candle:gguf-q4_1@podman` in a runtime comparison.
    pub fn label(&self) -> String {
        format!("{}{}", self.target.label(), self.label_suffix)
    }

    pub fn file_stem(&self) -> String {
        format!("{}{}", self.target.file_stem(), self.label_suffix)
    }
}

/// Everything `bench` needs; built by the xtask from its flags.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub run_id: String,
    pub model: ResolvedModel,
    pub targets: Vec<PreparedTarget>,
    pub skipped: Vec<(String, String)>,
    pub scenarios: Vec<Scenario>,
    pub device: Device,
    pub threads: usize,
    pub warmup_iterations: u32,
    pub iterations: u32,
    pub max_new_tokens: u32,
    pub timeout: Duration,
    pub runtime: String,
    pub profile: String,
    pub provenance: provenance::Provenance,
}

/// The scenarios of `plan` as engines receive them (identical for every target). Correctness
/// scenarios take their prompts and lengths from the model's reference; a synthetic model has
/// none, so they are left out (and said so). Returns the reference when one was used.
pub fn scenario_requests(
    plan: &BenchPlan,
) -> Result<(Vec<ScenarioRequest>, Option<correctness::Reference>)> {
    let prompts_dir = plan.root.join("prompts");
    let generation = |max_new_tokens| GenerationSettings {
        max_new_tokens,
        stop_at_eos: false,
        eos_token_ids: plan.model.eos_token_ids.clone(),
        sampling: Sampling::Greedy,
    };
    let mut reference = None;
    let mut out = Vec::new();
    for s in &plan.scenarios {
        let (prompts, generation, warmup_iterations, iterations) = match s.source {
            PromptSource::Passage(file) => (
                catalog::load_prompts(&prompts_dir, file, &plan.model.tokenizer_json)?,
                generation(plan.max_new_tokens),
                plan.warmup_iterations,
                plan.iterations,
            ),
            PromptSource::ReferenceGreedy | PromptSource::ReferenceTeacherForced => {
                if plan.model.synthetic {
                    eprintln!(
                        "scenario {}: skipped, model `{}` is synthetic (random weights have no reference)",
                        s.id, plan.model.name
                    );
                    continue;
                }
                if reference.is_none() {
                    let path = correctness::reference_path(&plan.root, &plan.model.name);
                    if !path.exists() {
                        return Err(Error::msg(format!(
                            "scenario {}: {} is missing: generate it with `cargo xtask reference --model {}` or leave out the correctness scenarios (`--scenario s1`)",
                            s.id,
                            display_path(&plan.root, &path),
                            plan.model.name
                        )));
                    }
                    reference = Some(correctness::load_reference(&path)?);
                }
                let r = reference.as_ref().expect("loaded above");
                // One iteration, no warm-up: these are checked for values, not timed.
                if s.source == PromptSource::ReferenceGreedy {
                    (r.greedy_prompts(), generation(r.continuation_tokens), 0, 1)
                } else {
                    (
                        r.teacher_forced_prompts(),
                        generation(r.continuation_tokens),
                        0,
                        1,
                    )
                }
            }
        };
        out.push(ScenarioRequest {
            id: s.id.to_string(),
            kind: s.kind,
            prompts,
            generation,
            warmup_iterations,
            iterations,
        });
    }
    Ok((out, reference))
}

/// Builds the request an engine receives for `plan`.
pub fn build_request(
    plan: &BenchPlan,
    t: &PreparedTarget,
    scenarios: &[ScenarioRequest],
) -> Request {
    Request {
        schema_version: SCHEMA_VERSION,
        model: lab_protocol::ModelSpec {
            name: plan.model.name.clone(),
            dir: t.model_dir_for_engine.clone(),
            format: t.target.format,
            dtype: t.target.dtype,
            synthetic: plan.model.synthetic,
        },
        device: plan.device.clone(),
        threads: Some(plan.threads as u32),
        scenarios: scenarios.to_vec(),
    }
}

fn model_info(plan: &BenchPlan) -> results::ModelInfo {
    let mut info = plan.model.info();
    info.dir = display_path(&plan.root, &plan.model.dir);
    info
}

/// Runs every target of `plan` in turn and writes `run.json`, one result file per target and
/// `report.md` into `plan.run_dir`. Each result is on disk as soon as its engine finishes; a
/// failing engine is recorded and the run goes on; Ctrl-C stops after killing the current engine.
pub fn bench(
    plan: &BenchPlan,
    interrupted: &AtomicBool,
) -> Result<(RunManifest, Vec<TargetResult>)> {
    let (requests, reference) = scenario_requests(plan)?;
    std::fs::create_dir_all(&plan.run_dir).map_err(|e| Error::io(&plan.run_dir, e))?;

    let mut manifest = RunManifest {
        result_version: RESULT_VERSION,
        run_id: plan.run_id.clone(),
        status: RunStatus::Running,
        profile: plan.profile.clone(),
        settings: RunSettings {
            model: model_info(plan),
            device: plan.device.to_string(),
            threads: plan.threads,
            scenarios: requests.iter().map(|s| s.id.clone()).collect(),
            warmup_iterations: plan.warmup_iterations,
            iterations: plan.iterations,
            max_new_tokens: plan.max_new_tokens,
            runtime: plan.runtime.clone(),
            timeout_s: plan.timeout.as_secs(),
        },
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
    };
    let run_json = plan.run_dir.join("run.json");
    write_json_atomic(&run_json, &manifest)?;

    let mut results = Vec::new();
    for (i, t) in plan.targets.iter().enumerate() {
        let label = t.label();
        eprintln!(
            "== [{}/{}] {label} ({}) ==",
            i + 1,
            plan.targets.len(),
            t.runtime
        );
        let request = build_request(plan, t, &requests);
        let binary_sha = sha256_file(&t.binary)?;
        let outcome = runner::run_engine(&t.launch, &request, &label, plan.timeout, interrupted);
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
            Err(RunError::Interrupted) => {
                manifest.targets.push(TargetOutcome {
                    target: label.clone(),
                    status: TargetStatus::Failed,
                    error: Some("interrupted (Ctrl-C)".into()),
                    file: None,
                });
                manifest.status = RunStatus::Interrupted;
                write_json_atomic(&run_json, &manifest)?;
                let md = results::render_markdown(&manifest, &results);
                results::write_atomic(&plan.run_dir.join("report.md"), md.as_bytes())?;
                eprintln!(
                    "interrupted: results of finished engines are in {}",
                    plan.run_dir.display()
                );
                return Ok((manifest, results));
            }
            Err(e) => (None, 0.0, Some(format!("{label}: {e}"))),
        };
        if let Some(e) = &error {
            eprintln!("error: {e}");
        }
        let Some(report) = report else {
            manifest.targets.push(TargetOutcome {
                target: label,
                status: TargetStatus::Failed,
                error,
                file: None,
            });
            write_json_atomic(&run_json, &manifest)?;
            continue;
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
        let result = TargetResult {
            result_version: RESULT_VERSION,
            run_id: plan.run_id.clone(),
            target: label.clone(),
            profile: plan.profile.clone(),
            model: model_info(plan),
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
        let mut result = result;
        if let Some(r) = &reference {
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
        let file = format!("{}.json", t.file_stem());
        write_json_atomic(&plan.run_dir.join(&file), &result)?;
        manifest.targets.push(TargetOutcome {
            target: label,
            status,
            error,
            file: Some(file),
        });
        write_json_atomic(&run_json, &manifest)?;
        results.push(result);
    }
    manifest.status = RunStatus::Complete;
    write_json_atomic(&run_json, &manifest)?;
    let md = results::render_markdown(&manifest, &results);
    results::write_atomic(&plan.run_dir.join("report.md"), md.as_bytes())?;
    Ok((manifest, results))
}
