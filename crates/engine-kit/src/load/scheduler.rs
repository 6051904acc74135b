//! S3's scheduler: closed-loop clients or seeded Poisson arrivals, a queue, admission into
//! free slots between decode steps, one decode step over every active sequence.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lab_protocol::{
    Arrival, GenerationSettings, LoadPoint, RequestRecord, RequestStatus, ScenarioRequest,
};

use super::*;
use crate::engine::EngineResult;
use crate::rss::PeakRss;
use crate::Sampler;

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
pub(super) fn concurrent(
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
            let started = std::time::Instant::now();
            let prefilled = engine
                .prefill_slot(slot, &prompt.token_ids, &mut self.logits)
                .and_then(|()| engine.synchronize());
            crate::slowdown::stretch(started);
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
