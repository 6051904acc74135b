//! The scenario loop: warm-up and measured iterations of every prompt, determinism across
//! iterations, progress on stderr. An engine error ends the scenario but keeps what was measured.

use lab_protocol::{PromptReport, ScenarioKind, ScenarioReport, ScenarioRequest};

use crate::engine::{Engine, SequenceEngine, SequenceRun};
use crate::stepwise::Stepwise;
use crate::KitError;

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
    let mut sampling = Vec::new();
    let mut unsupported = if scenario.generation.kv_cache {
        None
    } else {
        engine
            .kv_cache_off()
            .map(|why| format!("cannot run without the KV cache: {why}"))
    };
    if let Some(why) = &unsupported {
        eprintln!("scenario {}: {why}", scenario.id);
    }
    let cannot = unsupported.clone();
    for prompt in scenario.prompts.iter().filter(|_| cannot.is_none()) {
        let forced = match scenario.kind {
            ScenarioKind::SingleRequestLatency | ScenarioKind::SamplingOverhead => None,
            ScenarioKind::TeacherForced => Some(prompt.forced_token_ids.as_slice()),
            // Load kinds never reach this loop (the process sends them to `run_load`).
            ScenarioKind::BatchedThroughput | ScenarioKind::ConcurrentLoad => None,
            // Micro scenarios have no prompts (the process sends them to `run_micro`).
            ScenarioKind::Micro | ScenarioKind::LoraStep => None,
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
    if let (Some(overhead), None, None) = (&scenario.sampling_overhead, &error, &unsupported) {
        eprintln!(
            "progress: {} timing {} samplers x {} selections",
            scenario.id,
            overhead.strategies.len(),
            overhead.samples
        );
        match engine.time_sampling(overhead) {
            Ok(timed) => sampling = timed,
            Err(why) => {
                eprintln!("scenario {}: {why}", scenario.id);
                unsupported = Some(format!("cannot time the samplers: {why}"));
            }
        }
    }
    ScenarioReport {
        prompts,
        error,
        sampling,
        unsupported,
        ..ScenarioReport::empty(scenario)
    }
}

fn measure_prompt<S: SequenceEngine>(
    engine: &mut S,
    scenario: &ScenarioRequest,
    name: &str,
    prompt: &[u32],
    forced: Option<&[u32]>,
) -> Result<PromptReport, KitError> {
    let mut samples = Vec::with_capacity(scenario.iterations as usize);
    let mut first_seen: Option<Vec<u32>> = None;
    let mut reference: Option<Vec<u32>> = None;
    let mut top_logits = Vec::new();
    let mut deterministic = true;
    let mut measured_ms = 0u64;
    let rss = crate::rss::PeakRss::start();
    for i in 0.. {
        let warmup = i < scenario.warmup_iterations;
        if !warmup && !scenario.wants_more(samples.len() as u32, measured_ms) {
            break;
        }
        let started = std::time::Instant::now();
        let started_unix = crate::unix_now_ns();
        let SequenceRun {
            mut sample,
            tokens,
            top_logits: tops,
        } = engine.run_sequence(&scenario.generation, prompt, forced)?;
        // An engine that owns its loop: its first token came TTFT after the call.
        crate::phase::first_token_at(started + std::time::Duration::from_nanos(sample.ttft_ns));
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
        if warmup {
            eprintln!(
                "progress: {} {} warm-up {}/{}",
                scenario.id,
                name,
                i + 1,
                scenario.warmup_iterations
            );
            continue;
        }
        measured_ms += started.elapsed().as_millis() as u64;
        if reference.is_none() {
            reference = Some(tokens);
            top_logits = tops;
        }
        // Engines that own their loop may not stamp it: the call's start is close enough.
        sample.start_unix_ns.get_or_insert(started_unix);
        samples.push(sample);
        eprintln!(
            "progress: {} {} iteration {}/{} ({:.1} s measured)",
            scenario.id,
            name,
            samples.len(),
            scenario.iterations,
            measured_ms as f64 / 1e3
        );
    }
    Ok(PromptReport {
        prompt: name.to_string(),
        prompt_tokens: prompt.len() as u32,
        generated_token_ids: reference.unwrap_or_default(),
        deterministic,
        warmup_iterations: scenario.warmup_iterations,
        samples,
        top_logits,
        peak_rss_bytes: rss.finish(),
    })
}

/// Runs a load scenario (S2, S3): the engine's own scheduler or batches when it has them
/// ([`SequenceEngine::run_load`]), else one whole sequence at a time.
pub fn run_load_scenario<S: SequenceEngine + ?Sized>(
    engine: &mut S,
    scenario: &ScenarioRequest,
) -> lab_protocol::ScenarioReport {
    match engine.run_load(scenario) {
        Some(report) => report,
        None => crate::load::run_load_sequences(engine, scenario),
    }
}
