//! The one measurement loop that every Rust engine uses.
//!
//! An engine implements [`Engine`] (prefill, decode step, reset, device sync) and calls
//! [`run_main`] from its `main`. An engine whose library owns the generation loop (a scheduler
//! behind a request API, like mistral.rs) implements [`SequenceEngine`] instead — one whole timed
//! sequence per call — and calls [`run_main_sequences`]; everything around the sequence (request
//! validation, warm-up and iteration counts, determinism, progress, the report) stays the kit's. The kit reads the [`Request`] from stdin, times loading, runs the
//! scenarios (warm-up, N iterations, monotonic clock, a device sync before every timestamp,
//! sampling, stopping rules), reports progress on stderr and writes the [`Report`] to stdout.
//! Fairness comes from every engine being timed by this same code.

mod sampling;

use std::io::{Read, Write};
use std::time::Instant;

use lab_protocol::{
    EngineIdentity, GenerationSettings, IterationSample, LoadTimings, MemoryUsage, PromptReport,
    Report, Request, ScenarioKind, ScenarioReport, ScenarioRequest, TopLogits, SCHEMA_VERSION,
    TOP_K,
};

pub use sampling::{argmax, Sampler};

/// Errors from engine code are boxed; the kit only needs their message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
pub type EngineResult<T> = Result<T, BoxError>;

/// What an engine adapter implements. One sequence at a time; the kit owns the loop.
pub trait Engine {
    /// Name, versions, device, dtype, threads and fairness settings, as recorded in the report.
    fn identity(&self) -> EngineIdentity;

    /// Forgets the previous sequence (KV cache). Called before every prefill.
    fn reset(&mut self) -> EngineResult<()>;

    /// Runs the prompt and writes the logits of its last position into `logits` (vocab-sized).
    fn prefill(&mut self, prompt: &[u32], logits: &mut Vec<f32>) -> EngineResult<()>;

    /// Feeds one token at the next position and writes its logits into `logits`.
    fn decode(&mut self, token: u32, logits: &mut Vec<f32>) -> EngineResult<()>;

    /// Waits until queued device work is done. Called before every timestamp.
    fn synchronize(&mut self) -> EngineResult<()> {
        Ok(())
    }

    /// Peak accelerator memory in bytes, if the engine runs on one and can tell.
    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }
}

/// One generated sequence as the kit records it.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceRun {
    pub sample: IterationSample,
    /// Generated token ids (`sample.new_tokens` of them).
    pub tokens: Vec<u32>,
    /// Top logits of every predicted position; only for teacher-forced sequences.
    pub top_logits: Vec<TopLogits>,
}

/// What an engine with its own generation loop implements: one whole sequence per call, timed by
/// the engine around its library's API (and documented in its identity's settings).
pub trait SequenceEngine {
    fn identity(&self) -> EngineIdentity;

    /// Generates `generation.max_new_tokens` tokens after `prompt` (fewer only when
    /// `generation.stop_at_eos` is set and an EOS id is produced), or, with `forced` (teacher
    /// forcing), predicts every position of `forced` plus the one after it and keeps their top
    /// logits.
    fn run_sequence(
        &mut self,
        generation: &GenerationSettings,
        prompt: &[u32],
        forced: Option<&[u32]>,
    ) -> Result<SequenceRun, KitError>;

    /// Waits until queued device work is done (called once after loading).
    fn synchronize(&mut self) -> EngineResult<()> {
        Ok(())
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }
}

/// A step-wise [`Engine`] seen as a [`SequenceEngine`]: the kit's own timed loop.
pub struct Stepwise<'a, E> {
    engine: &'a mut E,
    logits: Vec<f32>,
}

impl<'a, E: Engine> Stepwise<'a, E> {
    pub fn new(engine: &'a mut E) -> Self {
        Stepwise {
            engine,
            logits: Vec::new(),
        }
    }
}

impl<E: Engine> SequenceEngine for Stepwise<'_, E> {
    fn identity(&self) -> EngineIdentity {
        self.engine.identity()
    }

    fn run_sequence(
        &mut self,
        generation: &GenerationSettings,
        prompt: &[u32],
        forced: Option<&[u32]>,
    ) -> Result<SequenceRun, KitError> {
        one_sequence(self.engine, generation, prompt, forced, &mut self.logits)
    }

    fn synchronize(&mut self) -> EngineResult<()> {
        self.engine.synchronize()
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        self.engine.peak_device_bytes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("cannot read the request from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("malformed request JSON on stdin: {0}")]
    MalformedRequest(serde_json::Error),
    #[error("request schema_version is {got}, this engine speaks {expected}")]
    SchemaVersion { got: u32, expected: u32 },
    #[error("scenario `{scenario}`: {message}")]
    InvalidScenario { scenario: String, message: String },
    #[error("engine error during {phase}: {source}")]
    Engine {
        phase: &'static str,
        source: BoxError,
    },
}

/// Parses and validates a request. Exposed for tests and for engines with their own `main`.
pub fn parse_request(json: &str) -> Result<Request, KitError> {
    let request: Request = serde_json::from_str(json).map_err(KitError::MalformedRequest)?;
    if request.schema_version != SCHEMA_VERSION {
        return Err(KitError::SchemaVersion {
            got: request.schema_version,
            expected: SCHEMA_VERSION,
        });
    }
    for s in &request.scenarios {
        let bad = |message: &str| KitError::InvalidScenario {
            scenario: s.id.clone(),
            message: message.to_string(),
        };
        if s.iterations == 0 {
            return Err(bad("iterations must be at least 1"));
        }
        if s.generation.max_new_tokens == 0 {
            return Err(bad("generation.max_new_tokens must be at least 1"));
        }
        if let Some(p) = s.prompts.iter().find(|p| p.token_ids.is_empty()) {
            return Err(bad(&format!("prompt `{}` has no tokens", p.name)));
        }
        if s.kind == ScenarioKind::TeacherForced {
            if let Some(p) = s
                .prompts
                .iter()
                .find(|p| p.forced_token_ids.len() as u32 + 1 != s.generation.max_new_tokens)
            {
                return Err(bad(&format!(
                    "prompt `{}` has {} forced tokens; a teacher-forced scenario needs generation.max_new_tokens = forced + 1",
                    p.name,
                    p.forced_token_ids.len()
                )));
            }
        }
    }
    Ok(request)
}

/// Peak resident set size of this process (Linux `VmHWM`), if the platform tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Static facts about an engine, known before anything is loaded (used in failure reports).
#[derive(Debug, Clone, Copy)]
pub struct EngineMeta {
    pub name: &'static str,
    pub version: &'static str,
    /// The library doing the work and its version, e.g. `candle-core 0.10.2`.
    pub backend: &'static str,
}

impl EngineMeta {
    /// The identity a loaded engine reports: these facts, the device, dtype and weight format the
    /// request asked for, the threads really used and the engine's settings.
    pub fn identity(
        &self,
        request: &Request,
        threads: u32,
        settings: std::collections::BTreeMap<String, String>,
    ) -> EngineIdentity {
        EngineIdentity {
            name: self.name.to_string(),
            version: self.version.to_string(),
            backend: self.backend.to_string(),
            device: request.device.to_string(),
            dtype: request.model.dtype.as_str().to_string(),
            weight_format: request.model.format,
            threads,
            settings,
        }
    }
}

/// The whole engine process: read request, load, run, write report. Every path writes a report;
/// the process exits with status 1 when the report carries a fatal error. Panics inside the
/// engine are caught and reported as errors.
pub fn run_main<E, L>(meta: EngineMeta, load: L) -> !
where
    E: Engine,
    L: FnOnce(&Request) -> EngineResult<E>,
{
    let mut loaded: Option<E> = None;
    let slot = &mut loaded;
    run_main_sequences(meta, move |request| {
        // Moving the captured reference out makes this closure FnOnce, so the engine can be
        // borrowed for as long as `loaded` lives.
        let slot = slot;
        Ok(Stepwise::new(slot.insert(load(request)?)))
    })
}

/// [`run_main`] for engines that implement [`SequenceEngine`].
pub fn run_main_sequences<S, L>(meta: EngineMeta, load: L) -> !
where
    S: SequenceEngine,
    L: FnOnce(&Request) -> EngineResult<S>,
{
    let process_start = Instant::now();
    let mut parsed: Option<Request> = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(process_start, load, &mut parsed)
    }));
    let outcome = match outcome {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("engine panicked: {msg}"))
        }
    };
    let (report, ok) = match outcome {
        Ok(report) => {
            let ok = report.error.is_none();
            (report, ok)
        }
        Err(e) => {
            eprintln!("error: {e}");
            (
                failed_report(failure_identity(&meta, parsed.as_ref()), e),
                false,
            )
        }
    };
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, &report)
        .map_err(std::io::Error::from)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    if let Err(e) = written {
        eprintln!("error: cannot write the report to stdout: {e}");
        std::process::exit(1);
    }
    std::process::exit(if ok { 0 } else { 1 })
}

fn failure_identity(meta: &EngineMeta, request: Option<&Request>) -> EngineIdentity {
    EngineIdentity {
        name: meta.name.to_string(),
        version: meta.version.to_string(),
        backend: meta.backend.to_string(),
        device: request.map(|r| r.device.to_string()).unwrap_or_default(),
        dtype: request
            .map(|r| r.model.dtype.as_str().to_string())
            .unwrap_or_default(),
        weight_format: request
            .map(|r| r.model.format)
            .unwrap_or(lab_protocol::WeightFormat::Safetensors),
        threads: request.and_then(|r| r.threads).unwrap_or(0),
        settings: Default::default(),
    }
}

fn failed_report(engine: EngineIdentity, error: String) -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        engine,
        load: None,
        memory: MemoryUsage {
            peak_rss_bytes: peak_rss_bytes(),
            peak_device_bytes: None,
        },
        scenarios: Vec::new(),
        error: Some(error),
    }
}

fn run<S, L>(
    process_start: Instant,
    load: L,
    parsed: &mut Option<Request>,
) -> Result<Report, KitError>
where
    S: SequenceEngine,
    L: FnOnce(&Request) -> EngineResult<S>,
{
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(KitError::Stdin)?;
    let request = parse_request(&input)?;
    *parsed = Some(request.clone());

    eprintln!(
        "loading {} ({:?}, {}) on {}",
        request.model.name,
        request.model.format,
        request.model.dtype.as_str(),
        request.device
    );
    let load_start = Instant::now();
    let mut engine = load(&request).map_err(|source| KitError::Engine {
        phase: "load",
        source,
    })?;
    engine.synchronize().map_err(|source| KitError::Engine {
        phase: "load",
        source,
    })?;
    let load = LoadTimings {
        load_ms: load_start.elapsed().as_secs_f64() * 1e3,
        process_start_to_ready_ms: process_start.elapsed().as_secs_f64() * 1e3,
    };
    eprintln!("loaded in {:.0} ms", load.load_ms);

    let mut scenarios = Vec::new();
    for scenario in &request.scenarios {
        scenarios.push(run_sequence_scenario(&mut engine, scenario));
    }
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        engine: engine.identity(),
        load: Some(load),
        memory: MemoryUsage {
            peak_rss_bytes: peak_rss_bytes(),
            peak_device_bytes: engine.peak_device_bytes(),
        },
        scenarios,
        error: None,
    })
}

/// Checks that a model file exists and is a non-empty regular file; engines call this before
/// handing a path to their library, so that nothing ever turns a missing file into a download.
pub fn require_file(path: &std::path::Path) -> EngineResult<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(()),
        Ok(_) => Err(format!(
            "model file {} is empty or not a file (rebuild it with `cargo xtask models`)",
            path.display()
        )
        .into()),
        Err(_) => Err(format!(
            "model file {} is missing (engines never download; run `cargo xtask models`)",
            path.display()
        )
        .into()),
    }
}

/// GGUF weights run in the dtype they are stored in: the volume's GGUF is Q4_1, so a request for
/// another dtype with the GGUF weight format is refused with one line naming it.
pub fn require_gguf_dtype(request: &Request) -> EngineResult<()> {
    if request.model.dtype != lab_protocol::Dtype::Q4_1 {
        return Err(format!(
            "GGUF weights run in the dtype they are stored in (q4_1), not {}",
            request.model.dtype.as_str()
        )
        .into());
    }
    Ok(())
}

/// Runs one scenario; an engine error ends the scenario but keeps the prompts already measured.
pub fn run_scenario<E: Engine>(engine: &mut E, scenario: &ScenarioRequest) -> ScenarioReport {
    run_sequence_scenario(&mut Stepwise::new(engine), scenario)
}

/// [`run_scenario`] for a [`SequenceEngine`].
pub fn run_sequence_scenario<S: SequenceEngine>(
    engine: &mut S,
    scenario: &ScenarioRequest,
) -> ScenarioReport {
    let mut prompts = Vec::new();
    let mut error = None;
    for prompt in &scenario.prompts {
        let forced = match scenario.kind {
            ScenarioKind::SingleRequestLatency => None,
            ScenarioKind::TeacherForced => Some(prompt.forced_token_ids.as_slice()),
        };
        match measure_prompt(engine, scenario, &prompt.name, &prompt.token_ids, forced) {
            Ok(report) => prompts.push(report),
            Err(e) => {
                eprintln!(
                    "error: scenario {} prompt {}: {e}",
                    scenario.id, prompt.name
                );
                error = Some(format!("prompt `{}`: {e}", prompt.name));
                break;
            }
        }
    }
    ScenarioReport {
        id: scenario.id.clone(),
        kind: scenario.kind,
        prompts,
        error,
    }
}

fn measure_prompt<S: SequenceEngine>(
    engine: &mut S,
    scenario: &ScenarioRequest,
    name: &str,
    prompt: &[u32],
    forced: Option<&[u32]>,
) -> Result<PromptReport, KitError> {
    let total = scenario.warmup_iterations + scenario.iterations;
    let mut samples = Vec::with_capacity(scenario.iterations as usize);
    let mut first_seen: Option<Vec<u32>> = None;
    let mut reference: Option<Vec<u32>> = None;
    let mut top_logits = Vec::new();
    let mut deterministic = true;
    for i in 0..total {
        let warmup = i < scenario.warmup_iterations;
        let SequenceRun {
            sample,
            tokens,
            top_logits: tops,
        } = engine.run_sequence(&scenario.generation, prompt, forced)?;
        if sample.new_tokens as usize != tokens.len()
            || sample.inter_token_ns.len() + 1 != tokens.len()
        {
            return Err(KitError::Engine {
                phase: "generate",
                source: format!(
                    "the engine returned {} tokens but timed {} ({} gaps)",
                    tokens.len(),
                    sample.new_tokens,
                    sample.inter_token_ns.len()
                )
                .into(),
            });
        }
        // Warm-ups count too: every iteration of a prompt must produce the same ids.
        match &first_seen {
            None => first_seen = Some(tokens.clone()),
            Some(f) if *f != tokens => deterministic = false,
            Some(_) => {}
        }
        if !warmup && reference.is_none() {
            reference = Some(tokens);
            top_logits = tops;
        }
        if !warmup {
            samples.push(sample);
        }
        let phase = if warmup { "warm-up" } else { "iteration" };
        let n = if warmup {
            i + 1
        } else {
            i + 1 - scenario.warmup_iterations
        };
        let of = if warmup {
            scenario.warmup_iterations
        } else {
            scenario.iterations
        };
        eprintln!("progress: {} {} {phase} {n}/{of}", scenario.id, name);
    }
    Ok(PromptReport {
        prompt: name.to_string(),
        prompt_tokens: prompt.len() as u32,
        generated_token_ids: reference.unwrap_or_default(),
        deterministic,
        warmup_iterations: scenario.warmup_iterations,
        samples,
        top_logits,
    })
}

/// Prefill plus fixed-length decode of one sequence, timed. With `forced` (teacher forcing) the
/// token fed at each step is the next forced one instead of the sampled one, and the top logits
/// of every position are kept (outside the timed span's device work, after its sync).
fn one_sequence<E: Engine>(
    engine: &mut E,
    g: &GenerationSettings,
    prompt: &[u32],
    forced: Option<&[u32]>,
    logits: &mut Vec<f32>,
) -> Result<SequenceRun, KitError> {
    let wrap = |phase: &'static str| move |source| KitError::Engine { phase, source };
    let mut sampler = Sampler::new(&g.sampling);
    let mut tokens = Vec::with_capacity(g.max_new_tokens as usize);
    let mut inter_token_ns = Vec::with_capacity(g.max_new_tokens as usize);
    let mut tops = Vec::new();

    engine.reset().map_err(wrap("reset"))?;
    engine.synchronize().map_err(wrap("reset"))?;
    let start = Instant::now();
    engine.prefill(prompt, logits).map_err(wrap("prefill"))?;
    let mut token = sampler.sample(logits);
    if forced.is_some() {
        tops.push(TopLogits::of(logits, TOP_K));
    }
    engine.synchronize().map_err(wrap("prefill"))?;
    let mut last = Instant::now();
    let ttft_ns = (last - start).as_nanos() as u64;
    tokens.push(token);

    while (tokens.len() as u32) < g.max_new_tokens {
        let feed = match forced {
            Some(f) => f[tokens.len() - 1],
            None if g.stop_at_eos && g.eos_token_ids.contains(&token) => break,
            None => token,
        };
        engine.decode(feed, logits).map_err(wrap("decode"))?;
        token = sampler.sample(logits);
        if forced.is_some() {
            tops.push(TopLogits::of(logits, TOP_K));
        }
        engine.synchronize().map_err(wrap("decode"))?;
        let now = Instant::now();
        inter_token_ns.push((now - last).as_nanos() as u64);
        last = now;
        tokens.push(token);
    }
    let e2e_ns = (last - start).as_nanos() as u64;
    let sample = IterationSample {
        ttft_ns,
        e2e_ns,
        new_tokens: tokens.len() as u32,
        inter_token_ns,
    };
    Ok(SequenceRun {
        sample,
        tokens,
        top_logits: tops,
    })
}

#[cfg(test)]
mod tests;
