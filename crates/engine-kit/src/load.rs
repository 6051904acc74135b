//! The load scenarios (S2 static batches, S3 concurrent clients) and the kit's scheduler.
//!
//! An engine that can hold several sequences implements [`BatchEngine`] (prefill a sequence
//! into a slot, one decode step over many slots at their own positions, release a slot); every
//! other step-wise engine takes part through [`Serial`] (one slot: requests are served one at a
//! time, and the report says `none (serial)`). The scheduler here owns admission, sampling and
//! every timestamp (after a device sync), so batched and serial engines are timed by the same
//! code.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lab_protocol::{
    Arrival, BatchSample, GenerationSettings, Load, LoadPoint, Prompt, PromptOutput, RequestRecord,
    RequestStatus, ScenarioReport, ScenarioRequest,
};

pub use crate::engine::BatchEngine;
use crate::engine::{Engine, EngineResult};
use crate::rss::PeakRss;
use crate::Sampler;

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
    engine.decode_slots(&batch, logits)?;
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
        engine.prefill_batch(&prompts, logits)?;
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

/// SplitMix64, for the seeded open-loop arrival times.
fn splitmix(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Open-loop arrival offsets (ns): exponential gaps of mean `1 / rate_per_s`, from `seed`.
pub fn poisson_arrivals(rate_per_s: f64, seed: u64, n: usize) -> Vec<u64> {
    let mut state = seed;
    let mut t = 0.0f64;
    (0..n)
        .map(|_| {
            let u = splitmix(&mut state);
            t += -(1.0 - u).ln() / rate_per_s;
            (t * 1e9) as u64
        })
        .collect()
}

/// S3 at concurrency `c`: `total` requests, at most `limit` decoding together.
fn concurrent(
    engine: &mut dyn BatchEngine,
    scenario: &ScenarioRequest,
    c: u32,
    arrival: &Arrival,
    total: u32,
    limit: usize,
) -> LoadPoint {
    let rss = PeakRss::start();
    let mut state = Scheduler::new(scenario, c, arrival, total as usize, limit);
    let error = state.serve(engine).err().map(|e| e.to_string());
    if let Some(e) = &error {
        state.refuse_rest(e);
    }
    LoadPoint {
        level: c,
        max_active: state.max_active as u32,
        batches: Vec::new(),
        requests: state.records,
        deterministic: state.outputs.deterministic,
        outputs: state.outputs.sorted(),
        peak_rss_bytes: rss.finish(),
        error,
        start_unix_ns: Some(crate::unix_ns_of(state.origin)),
    }
}

/// The continuous-batching scheduler of S3: new requests are prefilled into free slots between
/// decode steps; every active sequence advances one token per step.
struct Scheduler<'a> {
    scenario: &'a ScenarioRequest,
    level: u32,
    closed: bool,
    /// Open loop: arrival offsets of every request.
    arrivals: Vec<u64>,
    total: usize,
    limit: usize,
    records: Vec<RequestRecord>,
    queue: VecDeque<usize>,
    active: Vec<Seq>,
    free: Vec<usize>,
    outputs: Outputs,
    max_active: usize,
    origin: Instant,
    logits: Vec<f32>,
}

impl<'a> Scheduler<'a> {
    fn new(
        scenario: &'a ScenarioRequest,
        c: u32,
        arrival: &Arrival,
        total: usize,
        limit: usize,
    ) -> Self {
        let (closed, arrivals) = match *arrival {
            Arrival::Closed => (true, Vec::new()),
            Arrival::Poisson { rate_per_s, seed } => {
                (false, poisson_arrivals(rate_per_s, seed, total))
            }
        };
        let mut s = Scheduler {
            scenario,
            level: c,
            closed,
            arrivals,
            total,
            limit,
            records: Vec::with_capacity(total),
            queue: VecDeque::new(),
            active: Vec::new(),
            free: (0..limit).rev().collect(),
            outputs: Outputs::new(),
            max_active: 0,
            origin: Instant::now(),
            logits: Vec::new(),
        };
        if closed {
            for client in 0..(c as usize).min(total) {
                s.submit(client as u32, 0);
            }
        }
        s
    }

    /// A new request from `client` at `at_ns`; the prompts are taken in turn.
    fn submit(&mut self, client: u32, at_ns: u64) {
        let i = self.records.len();
        let p = &self.scenario.prompts[i % self.scenario.prompts.len()];
        self.records.push(RequestRecord {
            client,
            prompt: p.name.clone(),
            prompt_tokens: p.token_ids.len() as u32,
            submit_ns: at_ns,
            admit_ns: None,
            first_token_ns: None,
            done_ns: None,
            new_tokens: 0,
            status: RequestStatus::Refused {
                reason: "not served".to_string(),
            },
        });
        self.queue.push_back(i);
    }

    /// A request ended (completed or failed): its client sends the next one (closed loop).
    fn ended(&mut self, index: usize, status: RequestStatus) {
        let now = ns(self.origin);
        let r = &mut self.records[index];
        r.done_ns = Some(now);
        r.status = status;
        let client = r.client;
        if self.closed && self.records.len() < self.total {
            self.submit(client, now);
        }
    }

    fn serve(&mut self, engine: &mut dyn BatchEngine) -> EngineResult<()> {
        let g = self.scenario.generation.clone();
        engine.synchronize()?;
        self.origin = Instant::now();
        let mut last_progress = Instant::now();
        loop {
            let now = ns(self.origin);
            // Open loop: every request whose arrival time has come joins the queue, stamped
            // with its arrival time (waiting in the queue counts in its latency).
            while !self.closed && self.records.len() < self.arrivals.len() {
                let at = self.arrivals[self.records.len()];
                if at > now {
                    break;
                }
                let client = self.records.len() as u32;
                self.submit(client, at);
            }
            self.admit(engine, &g)?;
            if !self.active.is_empty() {
                match step(engine, &mut self.active, &mut self.logits) {
                    Ok(()) => self.finish_done(engine, &g),
                    Err(e) => self.fail_active(engine, &e.to_string()),
                }
            } else if self.queue.is_empty() {
                match self.arrivals.get(self.records.len()) {
                    Some(&at) if !self.closed => {
                        std::thread::sleep(Duration::from_nanos(
                            at.saturating_sub(ns(self.origin)),
                        ));
                    }
                    _ => break,
                }
            }
            if last_progress.elapsed() >= Duration::from_secs(2) {
                last_progress = Instant::now();
                self.progress();
            }
        }
        self.progress();
        Ok(())
    }

    fn progress(&self) {
        let ended = self.records.iter().filter(|r| r.done_ns.is_some()).count();
        eprintln!(
            "progress: {} concurrency {} requests {ended}/{} ended, {} decoding ({:.1} s)",
            self.scenario.id,
            self.level,
            self.total,
            self.active.len(),
            ns(self.origin) as f64 / 1e9
        );
    }

    /// Prefills queued requests into free slots (one at a time, before the next decode step).
    fn admit(&mut self, engine: &mut dyn BatchEngine, g: &GenerationSettings) -> EngineResult<()> {
        while self.active.len() < self.limit {
            let Some(index) = self.queue.pop_front() else {
                break;
            };
            let slot = self.free.pop().expect("a free slot below the limit");
            self.records[index].admit_ns = Some(ns(self.origin));
            let prompt = &self.scenario.prompts[index % self.scenario.prompts.len()];
            let prefilled = engine
                .prefill_slot(slot, &prompt.token_ids, &mut self.logits)
                .and_then(|()| engine.synchronize());
            if let Err(e) = prefilled {
                engine.release_slot(slot);
                self.free.push(slot);
                self.ended(
                    index,
                    RequestStatus::Failed {
                        reason: format!("prefill: {e}"),
                    },
                );
                continue;
            }
            let mut sampler = Sampler::new(&g.sampling);
            let first = sampler.sample(&self.logits);
            let r = &mut self.records[index];
            r.first_token_ns = Some(ns(self.origin));
            crate::phase::first_token_at(Instant::now());
            r.new_tokens = 1;
            self.active.push(Seq {
                slot,
                index,
                tokens: vec![first],
                sampler,
            });
            self.max_active = self.max_active.max(self.active.len());
            self.finish_done(engine, g);
        }
        Ok(())
    }

    /// Completes every active sequence that reached its length (or EOS, when asked).
    fn finish_done(&mut self, engine: &mut dyn BatchEngine, g: &GenerationSettings) {
        let mut i = 0;
        while i < self.active.len() {
            self.records[self.active[i].index].new_tokens = self.active[i].tokens.len() as u32;
            if self.active[i].done(g, true) {
                let s = self.active.swap_remove(i);
                engine.release_slot(s.slot);
                self.free.push(s.slot);
                let name = self.records[s.index].prompt.clone();
                self.outputs.record(&name, &s.tokens);
                self.ended(s.index, RequestStatus::Completed);
            } else {
                i += 1;
            }
        }
    }

    /// A failed step fails every request in it; the others (queued, later) go on.
    fn fail_active(&mut self, engine: &mut dyn BatchEngine, reason: &str) {
        for s in std::mem::take(&mut self.active) {
            engine.release_slot(s.slot);
            self.free.push(s.slot);
            self.ended(
                s.index,
                RequestStatus::Failed {
                    reason: format!("decode: {reason}"),
                },
            );
        }
    }

    /// The level ended early: whatever was not served is refused, with the reason.
    fn refuse_rest(&mut self, reason: &str) {
        for r in &mut self.records {
            if r.done_ns.is_none() {
                r.status = RequestStatus::Refused {
                    reason: format!("the level ended: {reason}"),
                };
            }
        }
        while self.records.len() < self.total {
            let i = self.records.len();
            self.submit(u32::MAX, ns(self.origin));
            self.records[i].status = RequestStatus::Refused {
                reason: format!("never submitted, the level ended: {reason}"),
            };
        }
    }
}

/// The load scenarios for a [`SequenceEngine`] (its library owns the generation loop): served one
/// whole sequence at a time, reported as [`SERIAL`]. Each sequence's timestamps come from its own
/// sample: the first token at `ttft_ns` after it started, each later one at its inter-token gap.
pub fn run_load_sequences<S: crate::SequenceEngine + ?Sized>(
    engine: &mut S,
    scenario: &ScenarioRequest,
) -> ScenarioReport {
    each_level(scenario, SERIAL.to_string(), |level| match level {
        Level::Batch { size, duration_ms } => sequence_batches(engine, scenario, size, duration_ms),
        Level::Clients {
            c, arrival, total, ..
        } => sequence_requests(engine, scenario, c, arrival, total as usize),
    })
}

/// A level with nothing measured yet.
pub fn empty_point(level: u32) -> LoadPoint {
    LoadPoint {
        level,
        max_active: 0,
        batches: Vec::new(),
        requests: Vec::new(),
        outputs: Vec::new(),
        deterministic: true,
        peak_rss_bytes: None,
        error: None,
        start_unix_ns: None,
    }
}

/// S2 for a sequence engine: the batch's sequences one after another, one sample each.
fn sequence_batches<S: crate::SequenceEngine + ?Sized>(
    engine: &mut S,
    scenario: &ScenarioRequest,
    b: u32,
    duration_ms: u64,
) -> LoadPoint {
    let rss = PeakRss::start();
    let mut point = empty_point(b);
    let mut outputs = Outputs::new();
    let mut start = Instant::now();
    'batches: for i in 0u32.. {
        let warmup = i < scenario.warmup_iterations;
        if i == scenario.warmup_iterations {
            start = Instant::now();
        }
        if !warmup && !point.batches.is_empty() && ns(start) >= duration_ms * 1_000_000 {
            break;
        }
        for p in scenario.prompts.iter().cycle().take(b as usize) {
            let start_ns = ns(start);
            match engine.run_sequence(&scenario.generation, &p.token_ids, None) {
                Ok(run) => {
                    point.max_active = 1;
                    outputs.record(&p.name, &run.tokens);
                    if !warmup {
                        point.batches.push(BatchSample {
                            start_ns,
                            sequences: 1,
                            prompt_tokens: p.token_ids.len() as u32,
                            prefill_ns: run.sample.ttft_ns,
                            step_ns: run.sample.inter_token_ns,
                            new_tokens: run.tokens.len() as u32,
                        });
                    }
                }
                Err(e) => {
                    point.error = Some(format!("batch {}: {e}", i + 1));
                    break 'batches;
                }
            }
        }
        eprintln!(
            "progress: {} batch size {b}: {} {} ({:.1} s measured, one sequence at a time)",
            scenario.id,
            if warmup { "warm-up batch" } else { "batch" },
            if warmup {
                i + 1
            } else {
                i + 1 - scenario.warmup_iterations
            },
            if warmup { 0.0 } else { ns(start) as f64 / 1e9 }
        );
    }
    point.deterministic = outputs.deterministic;
    point.outputs = outputs.sorted();
    point.peak_rss_bytes = rss.finish();
    point.start_unix_ns = Some(crate::unix_ns_of(start));
    point
}

/// S3 for a sequence engine: requests arrive as for every engine (closed loop or seeded Poisson)
/// and wait in a queue; the engine serves them one whole sequence at a time.
fn sequence_requests<S: crate::SequenceEngine + ?Sized>(
    engine: &mut S,
    scenario: &ScenarioRequest,
    c: u32,
    arrival: &Arrival,
    total: usize,
) -> LoadPoint {
    let rss = PeakRss::start();
    let mut point = empty_point(c);
    let mut outputs = Outputs::new();
    let arrivals = match *arrival {
        Arrival::Closed => None,
        Arrival::Poisson { rate_per_s, seed } => Some(poisson_arrivals(rate_per_s, seed, total)),
    };
    // (client, submit time) of every submitted request not yet served, in order.
    let mut queue: VecDeque<(usize, u32, u64)> = VecDeque::new();
    let origin = Instant::now();
    let mut submitted = 0usize;
    let submit = |queue: &mut VecDeque<(usize, u32, u64)>, submitted: &mut usize, client, at| {
        queue.push_back((*submitted, client, at));
        *submitted += 1;
    };
    if arrivals.is_none() {
        for client in 0..(c as usize).min(total) {
            submit(&mut queue, &mut submitted, client as u32, 0);
        }
    }
    while point.requests.len() < total {
        if let Some(a) = &arrivals {
            while submitted < total && a[submitted] <= ns(origin) {
                let (at, client) = (a[submitted], submitted as u32);
                submit(&mut queue, &mut submitted, client, at);
            }
            if queue.is_empty() {
                let next = a[submitted];
                std::thread::sleep(Duration::from_nanos(next.saturating_sub(ns(origin))));
                continue;
            }
        }
        let Some((index, client, submit_ns)) = queue.pop_front() else {
            break;
        };
        let p = &scenario.prompts[index % scenario.prompts.len()];
        let admit_ns = ns(origin);
        let mut record = RequestRecord {
            client,
            prompt: p.name.clone(),
            prompt_tokens: p.token_ids.len() as u32,
            submit_ns,
            admit_ns: Some(admit_ns),
            first_token_ns: None,
            done_ns: None,
            new_tokens: 0,
            status: RequestStatus::Completed,
        };
        match engine.run_sequence(&scenario.generation, &p.token_ids, None) {
            Ok(run) => {
                point.max_active = 1;
                record.first_token_ns = Some(admit_ns + run.sample.ttft_ns);
                record.done_ns = Some(admit_ns + run.sample.e2e_ns);
                record.new_tokens = run.tokens.len() as u32;
                outputs.record(&p.name, &run.tokens);
            }
            Err(e) => {
                record.done_ns = Some(ns(origin));
                record.status = RequestStatus::Failed {
                    reason: e.to_string(),
                };
            }
        }
        let done = record.done_ns.unwrap_or(admit_ns);
        point.requests.push(record);
        if arrivals.is_none() && submitted < total {
            submit(&mut queue, &mut submitted, client, done);
        }
    }
    // Requests are recorded in service order; keep them in submission order like the scheduler.
    point.requests.sort_by_key(|r| (r.submit_ns, r.client));
    point.deterministic = outputs.deterministic;
    point.outputs = outputs.sorted();
    point.peak_rss_bytes = rss.finish();
    point.start_unix_ns = Some(crate::unix_ns_of(origin));
    point
}
