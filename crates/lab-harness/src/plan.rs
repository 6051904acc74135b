//! A run's plan: the [`BenchSpec`] (what was asked) prepared into targets ready to start on this
//! machine, and the engine requests built from it (identical for every target).

use std::path::PathBuf;

use lab_protocol::{
    Device, GenerationSettings, Load, Prompt, Request, Sampling, SamplingOverhead, ScenarioKind,
    ScenarioRequest, SCHEMA_VERSION,
};

use crate::catalog::{self, PromptSource, Scenario, Target};
use crate::model::ResolvedModel;
use crate::runner::Launch;
use crate::{display_path, Error, Result};
use lab_results::correctness;
use lab_results::measure::LoadSettings;
use lab_results::provenance::Provenance;
use lab_results::results::{ModelInfo, RunSettings};
use lab_results::runtime::{RanUnder, Runtimes};
use lab_results::spec::BenchSpec;
use lab_results::ScenarioId;

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
    pub runtime: RanUnder,
    /// Appended to the label and file name when one run compares runtimes (`@podman`), else
    /// empty.
    pub label_suffix: String,
    /// The engine binary's sha256 when it is not a host file to hash: a prebuilt image's
    /// `lab.binary.sha256` label (or why it is unknown).
    pub binary_sha256: Option<String>,
    /// The container image's size in bytes, when the engine runs in one.
    pub image_bytes: Option<u64>,
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

/// Everything a run needs, prepared on this machine from a [`BenchSpec`]: the spec itself (what
/// was asked, recorded in `run.json`) and what it resolved to here (the model directory, each
/// target's launch command or container, the host's provenance and hardware profile).
#[derive(Debug, Clone)]
pub struct BenchPlan {
    pub spec: BenchSpec,
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub model: ResolvedModel,
    pub targets: Vec<PreparedTarget>,
    /// Selected targets that cannot run here, with the reason (recorded as skipped).
    pub skipped: Vec<(String, String)>,
    /// The runtimes the targets run under (`native`, `podman`, `native,podman`).
    pub runtime: Runtimes,
    pub profile: String,
    pub provenance: Provenance,
    /// `native-membw`, run just before and after every engine (the drift control), when built.
    pub probe: Option<PathBuf>,
}

impl BenchPlan {
    pub fn run_id(&self) -> &str {
        &self.spec.run_id
    }

    pub fn device(&self) -> &Device {
        &self.spec.device
    }

    /// The settings recorded in `run.json` and in every result (with the scenario ids the
    /// engines really received).
    pub fn settings(&self, scenarios: &[ScenarioRequest]) -> RunSettings {
        let s = &self.spec;
        RunSettings {
            model: self.model_info(),
            device: s.device.clone(),
            threads: s.threads,
            scenarios: scenarios.iter().map(|s| s.id.clone()).collect(),
            warmup_iterations: s.warmup_iterations,
            iterations: s.iterations,
            max_new_tokens: s.max_new_tokens,
            runtime: self.runtime.clone(),
            timeout_s: s.timeout_s,
            slowdown: s.slowdown,
        }
    }

    /// The model as results record it (its directory relative to the checkout).
    pub fn model_info(&self) -> ModelInfo {
        let mut info = self.model.info();
        info.dir = display_path(&self.root, &self.model.dir);
        info
    }
}

/// The scenarios of `plan` as engines receive them (identical for every target). Correctness
/// scenarios take their prompts and lengths from the model's reference; a synthetic model has
/// none, so they are left out (and said so). Returns the reference when one was used.
pub fn scenario_requests(
    plan: &BenchPlan,
) -> Result<(Vec<ScenarioRequest>, Option<correctness::Reference>)> {
    let chosen = plan.spec.sampling.clone().unwrap_or(Sampling::Greedy);
    if let Some(why) = chosen.invalid(plan.model.vocab_size) {
        return Err(Error::msg(format!(
            "sampling (--temperature/--top-k/--top-p) for model `{}`: {why}",
            plan.model.name
        )));
    }
    let mut reference = None;
    let mut out = Vec::new();
    let load = plan
        .spec
        .load
        .clone()
        .unwrap_or_else(|| plan.spec.measure.load_settings());
    // Whether a timed scenario ran before in the engine's process (see `Profile::warms_up_once`).
    let mut warm = false;
    for s in &catalog::select_scenarios(&plan.spec.scenarios)? {
        let parts = match s.source {
            PromptSource::Ops => {
                out.push(micro_request(plan, s, generation(plan, 1))?);
                continue;
            }
            PromptSource::Training(file) => {
                out.push(lora_request(plan, s, file, generation(plan, 1))?);
                continue;
            }
            PromptSource::Passage(file) => {
                let mut parts = passage_parts(plan, s, file, &load, &chosen)?;
                if warm && plan.spec.measure.warms_up_once() {
                    parts.2 = 0;
                }
                warm = true;
                parts
            }
            PromptSource::ReferenceGreedy | PromptSource::ReferenceTeacherForced => {
                match reference_parts(plan, s, &mut reference)? {
                    Some(parts) => parts,
                    None => continue,
                }
            }
        };
        out.push(request_of(plan, s, parts, &load));
    }
    Ok((out, reference))
}

/// Greedy generation of `max_new_tokens` with the KV cache (EOS ignored).
fn generation(plan: &BenchPlan, max_new_tokens: u32) -> GenerationSettings {
    GenerationSettings {
        max_new_tokens,
        stop_at_eos: false,
        eos_token_ids: plan.model.eos_token_ids.clone(),
        sampling: Sampling::Greedy,
        kv_cache: true,
    }
}

/// A timed scenario's generation: the run's sampling and KV-cache choice; the analyses set
/// their own.
fn timed_generation(
    plan: &BenchPlan,
    chosen: &Sampling,
    id: &str,
    max_new_tokens: u32,
) -> GenerationSettings {
    let id = ScenarioId::parse(id);
    GenerationSettings {
        sampling: match id {
            Some(ScenarioId::Sampling) => Sampling::Greedy,
            _ => chosen.clone(),
        },
        kv_cache: match id {
            Some(ScenarioId::KvOn) => true,
            Some(ScenarioId::KvOff) => false,
            Some(ScenarioId::S1 | ScenarioId::S5) => !plan.spec.kv_cache_off,
            _ => true,
        },
        ..generation(plan, max_new_tokens)
    }
}

/// A scenario's prompts, generation, warm-up and measured iterations.
type Parts = (Vec<Prompt>, GenerationSettings, u32, u32);

/// A timed scenario over a committed passage: its prompts (S5 at the load settings' lengths),
/// its tokens per request, the profile's iterations.
fn passage_parts(
    plan: &BenchPlan,
    s: &Scenario,
    file: &str,
    load: &LoadSettings,
    chosen: &Sampling,
) -> Result<Parts> {
    let id = ScenarioId::parse(s.id);
    let lengths: Option<Vec<usize>> = match (id, &load.long_lengths) {
        (Some(ScenarioId::S5), Some(l)) => Some(l.iter().map(|&n| n as usize).collect()),
        _ => None,
    };
    let prompts = catalog::load_prompts_of_lengths(
        &plan.root.join("prompts"),
        file,
        &plan.model.tokenizer_json,
        lengths.as_deref(),
    )?;
    let new_tokens = match id {
        Some(ScenarioId::S2 | ScenarioId::S3) => load.new_tokens,
        Some(ScenarioId::S5) => load.long_new_tokens,
        Some(ScenarioId::KvOn | ScenarioId::KvOff) => load.kv_new_tokens,
        _ => plan.spec.max_new_tokens,
    };
    check_context(plan, s.id, file, &prompts, new_tokens)?;
    Ok((
        prompts,
        timed_generation(plan, chosen, s.id, new_tokens),
        plan.spec.warmup_iterations,
        plan.spec.iterations,
    ))
}

/// A correctness scenario from the model's reference (read once into `reference`): one
/// iteration, no warm-up (checked for values, not timed). `None`: skipped, the model is
/// synthetic.
fn reference_parts(
    plan: &BenchPlan,
    s: &Scenario,
    reference: &mut Option<correctness::Reference>,
) -> Result<Option<Parts>> {
    if plan.model.synthetic {
        eprintln!(
            "scenario {}: skipped, model `{}` is synthetic (random weights have no reference)",
            s.id, plan.model.name
        );
        return Ok(None);
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
        *reference = Some(correctness::load_reference(&path)?);
    }
    let r = reference.as_ref().expect("loaded above");
    let prompts = if s.source == PromptSource::ReferenceGreedy {
        r.greedy_prompts()
    } else {
        r.teacher_forced_prompts()
    };
    Ok(Some((
        prompts,
        generation(plan, r.continuation_tokens),
        0,
        1,
    )))
}

/// The request of one prompt scenario.
fn request_of(
    plan: &BenchPlan,
    s: &Scenario,
    parts: Parts,
    load: &LoadSettings,
) -> ScenarioRequest {
    let (prompts, generation, warmup_iterations, iterations) = parts;
    let timed = matches!(s.source, PromptSource::Passage(_));
    ScenarioRequest {
        id: s.id.to_string(),
        kind: s.kind,
        prompts,
        generation,
        // A load level warms up with at most one untimed batch.
        warmup_iterations: if s.kind.is_load() {
            warmup_iterations.min(1)
        } else {
            warmup_iterations
        },
        iterations,
        // Correctness scenarios run exactly once; only timed ones follow the profile.
        min_duration_ms: if timed { plan.spec.min_duration_ms } else { 0 },
        max_duration_ms: if timed {
            plan.spec.max_duration_ms
        } else {
            None
        },
        load: load_request(s.kind, load),
        sampling_overhead: (s.kind == ScenarioKind::SamplingOverhead).then(|| SamplingOverhead {
            strategies: sampling_strategies(),
            samples: load.sampling_samples,
        }),
        micro: None,
        lora: None,
    }
}

/// The microbenchmark scenario: the cases of [`lab_results::micro::cases`] at the model's shapes
/// (from its `config.json`), with the run's micro settings.
fn micro_request(
    plan: &BenchPlan,
    s: &catalog::Scenario,
    generation: GenerationSettings,
) -> Result<ScenarioRequest> {
    let settings = plan.spec.micro.clone().ok_or_else(|| {
        Error::msg("scenario micro: the plan has no micro settings (`--analysis micro`)")
    })?;
    let model = lab_results::micro::op_model(&plan.model.dir.join("config.json"))?;
    let cases = lab_results::micro::cases(&model, &settings.dtypes, settings.tiny);
    if let Some((c, why)) = cases.iter().find_map(|c| Some((c, c.op.invalid(&model)?))) {
        return Err(Error::msg(format!(
            "scenario micro: case {} of model `{}`: {why}",
            c.id, plan.model.name
        )));
    }
    Ok(ScenarioRequest {
        id: s.id.to_string(),
        kind: s.kind,
        prompts: Vec::new(),
        generation,
        warmup_iterations: settings.warmup,
        iterations: settings.samples,
        min_duration_ms: 0,
        max_duration_ms: settings.max_case_ms,
        load: None,
        sampling_overhead: None,
        lora: None,
        micro: Some(lab_protocol::micro::Micro {
            model,
            cases,
            seed: settings.seed,
        }),
    })
}

/// The LoRA scenario: the first `seq_len + 1` ids of the committed passage as the one training
/// sequence, with the run's LoRA settings.
fn lora_request(
    plan: &BenchPlan,
    s: &catalog::Scenario,
    file: &str,
    generation: GenerationSettings,
) -> Result<ScenarioRequest> {
    let settings = plan.spec.lora.clone().ok_or_else(|| {
        Error::msg("scenario lora: the plan has no LoRA settings (`--analysis lora`)")
    })?;
    let n = settings.seq_len as usize + 1;
    let prompts = catalog::load_prompts_of_lengths(
        &plan.root.join("prompts"),
        file,
        &plan.model.tokenizer_json,
        Some(&[n]),
    )?;
    let ids = prompts
        .into_iter()
        .next()
        .map(|p| p.token_ids)
        .unwrap_or_default();
    if let Some(context) = plan.model.context_length {
        if n > context as usize {
            return Err(Error::msg(format!(
                "scenario lora: a sequence of {n} tokens exceeds model `{}`'s context of {context}",
                plan.model.name
            )));
        }
    }
    let lora = settings.request(ids);
    if let Some(why) = lab_protocol::train::invalid(&lora) {
        return Err(Error::msg(format!("scenario lora: {why}")));
    }
    Ok(ScenarioRequest {
        id: s.id.to_string(),
        kind: s.kind,
        prompts: Vec::new(),
        generation,
        warmup_iterations: settings.warmup,
        iterations: settings.steps,
        min_duration_ms: 0,
        max_duration_ms: None,
        load: None,
        sampling_overhead: None,
        micro: None,
        lora: Some(lora),
    })
}

/// The protocol's load settings of a scenario kind (none for the per-prompt kinds).
pub(crate) fn load_request(kind: ScenarioKind, load: &LoadSettings) -> Option<Load> {
    match kind {
        ScenarioKind::BatchedThroughput => Some(Load::Batches {
            batch_sizes: load.batch_sizes.clone(),
            duration_ms: load.batch_duration_ms,
        }),
        ScenarioKind::ConcurrentLoad => Some(Load::Concurrent {
            concurrency: load.concurrency.clone(),
            arrival: load.arrival.clone(),
            requests: load.requests,
            max_batch: load.max_batch,
        }),
        ScenarioKind::SingleRequestLatency
        | ScenarioKind::TeacherForced
        | ScenarioKind::SamplingOverhead
        | ScenarioKind::Micro
        | ScenarioKind::LoraStep => None,
    }
}

/// The strategies the sampling-overhead analysis times, as its source names them: greedy,
/// temperature 0.7, top-k 50, top-p 0.9 (seeded, so every engine draws the same stream).
pub fn sampling_strategies() -> Vec<Sampling> {
    let random = |temperature, top_p, top_k| Sampling::TopP {
        temperature,
        top_p,
        seed: 20,
        top_k,
    };
    vec![
        Sampling::Greedy,
        random(0.7, 1.0, None),
        random(1.0, 1.0, Some(50)),
        random(1.0, 0.9, None),
    ]
}

/// Every prompt of a scenario plus its generated tokens fits the model's context: a longer one
/// is an error before any engine starts, never a silent truncation.
fn check_context(
    plan: &BenchPlan,
    id: &str,
    file: &str,
    prompts: &[lab_protocol::Prompt],
    new_tokens: u32,
) -> Result<()> {
    let Some(context) = plan.model.context_length else {
        return Ok(());
    };
    match prompts
        .iter()
        .find(|p| p.token_ids.len() as u64 + new_tokens as u64 > context as u64)
    {
        Some(p) => Err(Error::msg(format!(
            "scenario {id}: prompt `{}` of prompts/{file} has {} tokens; with {new_tokens} generated tokens it exceeds model `{}`'s context of {context} tokens",
            p.name,
            p.token_ids.len(),
            plan.model.name
        ))),
        None => Ok(()),
    }
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
        device: plan.spec.device.clone(),
        threads: Some(crate::placement::Placement::of(&plan.spec).threads as u32),
        scenarios: scenarios.to_vec(),
    }
}
