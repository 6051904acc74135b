//! The load scenarios (S2 static batches, S3 concurrent clients) and the kit's scheduler.
//!
//! An engine that can hold several sequences implements [`BatchEngine`] (prefill a sequence
//! into a slot, one decode step over many slots at their own positions, release a slot); every
//! other step-wise engine takes part through [`Serial`] (one slot: requests are served one at a
//! time, and the report says `none (serial)`). The scheduler here owns admission, sampling and
//! every timestamp (after a device sync), so batched and serial engines are timed by the same
//! code.

use std::time::Instant;

use lab_protocol::{
    Arrival, BatchSample, GenerationSettings, Load, LoadPoint, Prompt, PromptOutput,
    ScenarioReport, ScenarioRequest,
};

pub use crate::engine::BatchEngine;
use crate::engine::{Engine, EngineResult};
use crate::rss::PeakRss;
use crate::Sampler;

mod scheduler;
mod sequences;

use scheduler::concurrent;
pub use scheduler::poisson_arrivals;
pub use sequences::{empty_point, run_load_sequences};

/// A one-sequence [`Engine`] as a one-slot [`BatchEngine`]: requests are served one at a time.
/// The second field, when set, says why (reported as `none (serial): <why>`).
pub struct Serial<'a, E: ?Sized>(pub &'a mut E, pub Option<String>);

/// What [`Serial`] reports as its batching.
pub const SERIAL: &str = "none (serial)";

impl<E: Engine + ?Sized> BatchEngine for Serial<'_, E> {
    fn max_slots(&self) -> usize {
        1
    }
    fn batching(&self) -> String {
        match &self.1 {
            None => SERIAL.to_string(),
            Some(why) => format!("{SERIAL}: {why}"),
        }
    }
    fn prefill_slot(
        &mut self,
        _: usize,
        prompt: &[u32],
        logits: &mut Vec<f32>,
    ) -> EngineResult<()> {
        self.0.reset()?;
        self.0.prefill(prompt, logits)
    }
    fn decode_slots(&mut self, batch: &[(usize, u32)], logits: &mut Vec<f32>) -> EngineResult<()> {
        match batch {
            [(_, token)] => self.0.decode(*token, logits),
            _ => Err(format!("a serial engine decodes one sequence, not {}", batch.len()).into()),
        }
    }
    fn release_slot(&mut self, _: usize) {}
    fn synchronize(&mut self) -> EngineResult<()> {
        self.0.synchronize()
    }
}

/// One level of a load scenario, as the drivers take it (also an engine whose library schedules
/// requests itself, through [`each_level`]).
pub enum Level<'a> {
    Batch {
        size: u32,
        duration_ms: u64,
    },
    Clients {
        c: u32,
        arrival: &'a Arrival,
        /// Requests of the level (never fewer than `c`).
        total: u32,
        max_batch: u32,
    },
}

/// The report of a load scenario: `run` measures each of its levels in turn. `Clients::total`
/// is never below the concurrency.
pub fn each_level(
    scenario: &ScenarioRequest,
    batching: String,
    mut run: impl FnMut(Level) -> LoadPoint,
) -> ScenarioReport {
    let mut report = ScenarioReport {
        batching: Some(batching),
        ..ScenarioReport::empty(scenario)
    };
    match &scenario.load {
        Some(Load::Batches {
            batch_sizes,
            duration_ms,
        }) => {
            for &size in batch_sizes {
                report.points.push(run(Level::Batch {
                    size,
                    duration_ms: *duration_ms,
                }));
            }
        }
        Some(Load::Concurrent {
            concurrency,
            arrival,
            requests,
            max_batch,
        }) => {
            for &c in concurrency {
                report.points.push(run(Level::Clients {
                    c,
                    arrival,
                    total: (*requests).max(c),
                    max_batch: *max_batch,
                }));
            }
        }
        None => report.error = Some("a load scenario needs its `load` settings".to_string()),
    }
    report
}

/// Runs a load scenario (S2 or S3) on `engine`: one [`LoadPoint`] per level. A failure ends the
/// level (recorded in it), never the scenario.
pub fn run_load(engine: &mut dyn BatchEngine, scenario: &ScenarioRequest) -> ScenarioReport {
    let batching = engine.batching();
    each_level(scenario, batching, |level| match level {
        Level::Batch { size, duration_ms } => batches(engine, scenario, size, duration_ms),
        Level::Clients {
            c,
            arrival,
            total,
            max_batch,
        } => {
            let limit = (c.min(max_batch) as usize).min(engine.max_slots()).max(1);
            concurrent(engine, scenario, c, arrival, total, limit)
        }
    })
}

/// Outputs of one level: the first ids of every prompt and whether every later completion of
/// the same prompt matched them.
#[derive(Default)]
pub struct Outputs {
    first: Vec<PromptOutput>,
    pub deterministic: bool,
}

impl Outputs {
    pub fn new() -> Self {
        Outputs {
            first: Vec::new(),
            deterministic: true,
        }
    }
    /// The first ids of every prompt, by prompt name (independent of completion order).
    pub fn sorted(mut self) -> Vec<PromptOutput> {
        self.first.sort_by(|a, b| a.prompt.cmp(&b.prompt));
        self.first
    }

    pub fn record(&mut self, prompt: &str, ids: &[u32]) {
        match self.first.iter().find(|o| o.prompt == prompt) {
            Some(o) if o.token_ids != ids => self.deterministic = false,
            Some(_) => {}
            None => self.first.push(PromptOutput {
                prompt: prompt.to_string(),
                token_ids: ids.to_vec(),
            }),
        }
    }
}

fn ns(since: Instant) -> u64 {
    since.elapsed().as_nanos() as u64
}

/// One in-flight sequence.
struct Seq {
    slot: usize,
    /// Index into the level's requests (S3) or the batch (S2).
    index: usize,
    tokens: Vec<u32>,
    sampler: Sampler,
}

impl Seq {
    fn done(&self, g: &GenerationSettings, eos_counts: bool) -> bool {
        let last = *self.tokens.last().expect("a sequence has its first token");
        self.tokens.len() as u32 >= g.max_new_tokens
            || (eos_counts && g.stop_at_eos && g.eos_token_ids.contains(&last))
    }
}

/// One decode step over `active`: feed each its last token, sample the next.
fn step(
    engine: &mut dyn BatchEngine,
    active: &mut [Seq],
    logits: &mut Vec<f32>,
) -> EngineResult<()> {
    let batch: Vec<(usize, u32)> = active
        .iter()
        .map(|s| (s.slot, *s.tokens.last().expect("first token")))
        .collect();
    let started = std::time::Instant::now();
    engine.decode_slots(&batch, logits)?;
    crate::slowdown::stretch(started);
    let vocab = logits.len() / batch.len().max(1);
    if vocab == 0 || logits.len() != vocab * batch.len() {
        return Err(format!(
            "decode_slots wrote {} logits for {} sequences",
            logits.len(),
            batch.len()
        )
        .into());
    }
    for (i, s) in active.iter_mut().enumerate() {
        let t = s.sampler.sample(&logits[i * vocab..(i + 1) * vocab]);
        s.tokens.push(t);
    }
    engine.synchronize()
}

/// S2 at batch size `b`: warm-up batches, then measured batches until `duration_ms` passed.
fn batches(
    engine: &mut dyn BatchEngine,
    scenario: &ScenarioRequest,
    b: u32,
    duration_ms: u64,
) -> LoadPoint {
    let rss = PeakRss::start();
    let mut point = LoadPoint {
        level: b,
        max_active: 0,
        batches: Vec::new(),
        requests: Vec::new(),
        outputs: Vec::new(),
        deterministic: true,
        peak_rss_bytes: None,
        error: None,
        start_unix_ns: None,
    };
    let prompts: Vec<&Prompt> = scenario.prompts.iter().cycle().take(b as usize).collect();
    let chunk = engine.max_slots().max(1);
    let mut outputs = Outputs::new();
    let mut logits = Vec::new();
    let mut start = Instant::now();
    for i in 0u32.. {
        let warmup = i < scenario.warmup_iterations;
        if i == scenario.warmup_iterations {
            start = Instant::now();
        }
        if !warmup && !point.batches.is_empty() && ns(start) >= duration_ms * 1_000_000 {
            break;
        }
        // A batch larger than the engine holds runs as consecutive chunks (one sample each).
        for group in prompts.chunks(chunk) {
            match one_batch(engine, scenario, group, start, &mut logits, &mut outputs) {
                Ok(sample) => {
                    point.max_active = point.max_active.max(sample.sequences);
                    if !warmup {
                        point.batches.push(sample);
                    }
                }
                Err(e) => {
                    point.error = Some(format!("batch {}: {e}", i + 1));
                    break;
                }
            }
        }
        if point.error.is_some() {
            break;
        }
        if warmup {
            eprintln!(
                "progress: {} batch size {b}: warm-up batch {}",
                scenario.id,
                i + 1
            );
        } else {
            eprintln!(
                "progress: {} batch size {b}: batch {} ({:.1} s measured)",
                scenario.id,
                i + 1 - scenario.warmup_iterations,
                ns(start) as f64 / 1e9
            );
        }
    }
    point.deterministic = outputs.deterministic;
    point.outputs = outputs.sorted();
    point.peak_rss_bytes = rss.finish();
    point.start_unix_ns = Some(crate::unix_ns_of(start));
    point
}

/// Prefills `group` into slots `0..`, decodes them in lock-step (EOS ignored), releases them.
fn one_batch(
    engine: &mut dyn BatchEngine,
    scenario: &ScenarioRequest,
    group: &[&Prompt],
    origin: Instant,
    logits: &mut Vec<f32>,
    outputs: &mut Outputs,
) -> EngineResult<BatchSample> {
    let g = &scenario.generation;
    engine.synchronize()?;
    let start_ns = ns(origin);
    let t0 = Instant::now();
    let mut active = Vec::with_capacity(group.len());
    let result = (|| -> EngineResult<(u64, Vec<u64>)> {
        let prompts: Vec<&[u32]> = group.iter().map(|p| p.token_ids.as_slice()).collect();
        // Every slot of the group is taken from here on, also when prefilling fails half-way.
        active.extend((0..group.len()).map(|slot| Seq {
            slot,
            index: slot,
            tokens: Vec::new(),
            sampler: Sampler::new(&g.sampling),
        }));
        let started = std::time::Instant::now();
        engine.prefill_batch(&prompts, logits)?;
        crate::slowdown::stretch(started);
        let vocab = logits.len() / group.len().max(1);
        if vocab == 0 || logits.len() != vocab * group.len() {
            return Err(format!(
                "prefill_batch wrote {} logits for {} sequences",
                logits.len(),
                group.len()
            )
            .into());
        }
        for (i, s) in active.iter_mut().enumerate() {
            let first = s.sampler.sample(&logits[i * vocab..(i + 1) * vocab]);
            s.tokens.push(first);
        }
        engine.synchronize()?;
        crate::phase::first_token_at(Instant::now());
        let prefill_ns = ns(t0);
        let mut step_ns = Vec::new();
        while !active[0].done(g, false) {
            let t = Instant::now();
            step(engine, &mut active, logits)?;
            step_ns.push(ns(t));
        }
        Ok((prefill_ns, step_ns))
    })();
    for s in &active {
        engine.release_slot(s.slot);
    }
    let (prefill_ns, step_ns) = result?;
    for s in &active {
        outputs.record(&group[s.index].name, &s.tokens);
    }
    Ok(BatchSample {
        start_ns,
        sequences: group.len() as u32,
        prompt_tokens: group.iter().map(|p| p.token_ids.len() as u32).sum(),
        prefill_ns,
        new_tokens: active.iter().map(|s| s.tokens.len() as u32).sum(),
        step_ns,
    })
}
